#!/usr/bin/env bash
# Stage 4: quality fine-tuning at 768 px from the stage-3 run in STAGE3_DIR, on the curated videos in CURATED (a CSV
# from tools/curate_videos.py select; default $DATA/video_caption_curated.csv), with stage 3's layout for MODEL
# (scripts/stage_common.sh). Run it several times with different SEEDs, then average the runs:
#   python tools/average_checkpoints.py --checkpoints "[<run 1>/ckpt, <run 2>/ckpt, <run 3>/ckpt]" --output <model>
# Extra arguments go to train.py.
source "$(dirname "$0")/stage_common.sh"
: "${STAGE3_DIR:?set STAGE3_DIR to the stage-3 run folder to start from}"
layout 4
export MS_DEV_ENABLE_KERNEL_PACKET=on
SEED=${SEED:-42}
stage4_dir=${OUTPUT:-output/stage4_sft_768px/seed$SEED-$(date +"%Y.%m.%d-%H.%M.%S")}

launch "$stage4_dir" \
  --config configs/train/stage4_sft_768px.yaml \
  --config "configs/model/dit_$MODEL.yaml" \
  "${LAYOUT[@]}" \
  --env.distributed True \
  --env.max_device_memory 59GB \
  --env.seed "$SEED" \
  --dataloader.seed "$SEED" \
  --model.pretrained_model_path "$STAGE3_DIR/ckpt" \
  --dataset.csv_path "${CURATED:-$DATA/video_caption_curated.csv}" \
  --dataset.video_folder "$DATA/mixkit" \
  --dataset.tae_latent_folder "$DATA/high_tae_latent" \
  --dataset.text_emb_folder.ul2 "$DATA/ul2_emb_300" \
  --dataset.text_emb_folder.byt5 "$DATA/byt5_emb_100" \
  --train.output_path "$stage4_dir" \
  "$@"
