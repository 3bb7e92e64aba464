#!/usr/bin/env bash
# Stage 3: joint text-to-image/video at 768 px: the seed's stage-3 script with the layout that fits MODEL
# (scripts/stage_common.sh lists the settings), from the stage-2 run in STAGE2_DIR. Extra arguments go to train.py.
source "$(dirname "$0")/stage_common.sh"
: "${STAGE2_DIR:?set STAGE2_DIR to the stage-2 run folder to start from}"
layout 3
export MS_DEV_ENABLE_KERNEL_PACKET=on
stage3_dir=${OUTPUT:-output/stage3_t2iv_768px/$(date +"%Y.%m.%d-%H.%M.%S")}

launch "$stage3_dir" \
  --config configs/train/stage3_t2iv_768px.yaml \
  --config "configs/model/dit_$MODEL.yaml" \
  "${LAYOUT[@]}" \
  --env.mode 0 \
  --env.jit_level O1 \
  --env.max_device_memory 59GB \
  --env.distributed True \
  --model.pretrained_model_path "$STAGE2_DIR/ckpt" \
  --dataset.csv_path "$DATA/video_caption_train.csv" \
  --dataset.video_folder "$DATA/mixkit" \
  --dataset.tae_latent_folder "$DATA/high_tae_latent" \
  --dataset.text_emb_folder.ul2 "$DATA/ul2_emb_300" \
  --dataset.text_emb_folder.byt5 "$DATA/byt5_emb_100" \
  --dataloader.batch_size.image_batch_size 1 \
  --dataloader.batch_size.video_batch_size 1 \
  --train.ema "" \
  --train.optimizer.weight_decay 0 \
  --train.settings.gradient_accumulation_steps 5 \
  --train.steps 30000 \
  --train.output_path "$stage3_dir" \
  "$@"
