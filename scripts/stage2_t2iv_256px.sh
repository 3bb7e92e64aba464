#!/usr/bin/env bash
# Stage 2: joint text-to-image/video at 256 px: the seed's stage-2 script with the layout that fits MODEL
# (scripts/stage_common.sh lists the settings), from the stage-1 run in STAGE1_DIR. Extra arguments go to train.py.
source "$(dirname "$0")/stage_common.sh"
: "${STAGE1_DIR:?set STAGE1_DIR to the stage-1 run folder to start from}"
layout 2
export MS_DEV_ENABLE_KERNEL_PACKET=on
stage2_dir=${OUTPUT:-output/stage2_t2iv_256px/$(date +"%Y.%m.%d-%H.%M.%S")}

launch "$stage2_dir" \
  --config configs/train/stage2_t2iv_256px.yaml \
  --config "configs/model/dit_$MODEL.yaml" \
  "${LAYOUT[@]}" \
  --env.mode 0 \
  --env.jit_level O1 \
  --env.max_device_memory 59GB \
  --env.distributed True \
  --model.pretrained_model_path "$STAGE1_DIR/ckpt" \
  --dataset.csv_path "$DATA/video_caption_train.csv" \
  --dataset.video_folder "$DATA/mixkit" \
  --dataset.tae_latent_folder "$DATA/tae_latent" \
  --dataset.text_emb_folder.ul2 "$DATA/ul2_emb_300" \
  --dataset.text_emb_folder.byt5 "$DATA/byt5_emb_100" \
  --dataloader.batch_size.image_batch_size 1 \
  --dataloader.batch_size.video_batch_size 1 \
  --train.ema "" \
  --train.lr_scheduler.lr 0.0001 \
  --train.optimizer.weight_decay 0 \
  --train.settings.gradient_accumulation_steps 5 \
  --train.steps 40000 \
  --train.output_path "$stage2_dir" \
  "$@"
