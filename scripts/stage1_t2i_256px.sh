#!/usr/bin/env bash
# Stage 1: text-to-image at 256 px, the seed's stage-1 script with the layout that fits MODEL (scripts/stage_common.sh
# lists the settings). Extra arguments go to train.py, e.g. --train.steps 100.
source "$(dirname "$0")/stage_common.sh"
layout 1
stage1_dir=${OUTPUT:-output/stage1_t2i_256px/$(date +"%Y.%m.%d-%H.%M.%S")}

launch "$stage1_dir" \
  --config configs/train/stage1_t2i_256px.yaml \
  --config "configs/model/dit_$MODEL.yaml" \
  "${LAYOUT[@]}" \
  --env.mode 0 \
  --env.jit_level O1 \
  --env.max_device_memory 59GB \
  --env.distributed True \
  --dataset.csv_path "$DATA/video_caption_train.csv" \
  --dataset.video_folder "$DATA/mixkit" \
  --dataset.tae_latent_folder "$DATA/tae_latent_images" \
  --dataset.text_emb_folder.ul2 "$DATA/ul2_emb_300" \
  --dataset.text_emb_folder.byt5 "$DATA/byt5_emb_100" \
  --dataloader.batch_size 10 \
  --valid.dataset "" \
  --train.ema "" \
  --train.optimizer.weight_decay 0 \
  --train.save.ckpt_save_policy latest_k \
  --train.steps 2000 \
  --train.output_path "$stage1_dir" \
  "$@"
