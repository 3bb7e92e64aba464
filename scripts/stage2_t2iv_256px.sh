#!/usr/bin/env bash
# Stage 2: joint text-to-image/video at 256 px on 8 NPUs, from a stage-1 checkpoint:
#   STAGE1_CKPT=output/stage1_t2i_256px/<date>/ckpt/step_000002000.safetensors MODEL=5B scripts/stage2_t2iv_256px.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${MODEL:-5B}
: "${STAGE1_CKPT:?set STAGE1_CKPT to the stage-1 checkpoint to start from}"
export ASCEND_RT_VISIBLE_DEVICES=${ASCEND_RT_VISIBLE_DEVICES:-0,1,2,3,4,5,6,7}
export MS_MEMORY_STATISTIC=0
export MS_DEV_ENABLE_KERNEL_PACKET=on
export GLOG_v=2

stage2_dir=output/stage2_t2iv_256px/$(date +"%Y.%m.%d-%H.%M.%S")

msrun --bind_core=True --master_port=8200 --worker_num=8 --local_worker_num=8 --log_dir="$stage2_dir" \
  python train.py \
  --config configs/train/stage2_t2iv_256px.yaml \
  --config "configs/model/dit_$MODEL.yaml" \
  --env.mode 0 \
  --env.jit_level O1 \
  --env.max_device_memory 59GB \
  --env.distributed True \
  --model.pretrained_model_path "$STAGE1_CKPT" \
  --train.settings.zero_stage 2 \
  --train.settings.gradient_accumulation_steps 5 \
  --train.output_path "$stage2_dir" \
  "$@"
