#!/usr/bin/env bash
# Stage 3: joint text-to-image/video at 768 px on 8 NPUs, from a stage-2 checkpoint:
#   STAGE2_CKPT=output/stage2_t2iv_256px/<date>/ckpt/step_000040000.safetensors MODEL=5B scripts/stage3_t2iv_768px.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${MODEL:-5B}
: "${STAGE2_CKPT:?set STAGE2_CKPT to the stage-2 checkpoint to start from}"
export ASCEND_RT_VISIBLE_DEVICES=${ASCEND_RT_VISIBLE_DEVICES:-0,1,2,3,4,5,6,7}
export MS_MEMORY_STATISTIC=0
export MS_DEV_ENABLE_KERNEL_PACKET=on
export GLOG_v=2

stage3_dir=output/stage3_t2iv_768px/$(date +"%Y.%m.%d-%H.%M.%S")

msrun --bind_core=True --master_port=8200 --worker_num=8 --local_worker_num=8 --log_dir="$stage3_dir" \
  python train.py \
  --config configs/train/stage3_t2iv_768px.yaml \
  --config "configs/model/dit_$MODEL.yaml" \
  --env.mode 0 \
  --env.jit_level O1 \
  --env.max_device_memory 59GB \
  --env.distributed True \
  --model.pretrained_model_path "$STAGE2_CKPT" \
  --train.settings.zero_stage 2 \
  --train.settings.gradient_accumulation_steps 5 \
  --train.output_path "$stage3_dir" \
  "$@"
