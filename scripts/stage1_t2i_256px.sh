#!/usr/bin/env bash
# Stage 1: text-to-image at 256 px on 8 NPUs. MODEL=1B|5B|30B picks the size (configs/model/dit_$MODEL.yaml).
# Extra arguments go to train.py, e.g. --dataset.csv_path ... --dataset.tae_latent_folder ... --train.steps 2000
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${MODEL:-5B}
export ASCEND_RT_VISIBLE_DEVICES=${ASCEND_RT_VISIBLE_DEVICES:-0,1,2,3,4,5,6,7}
export MS_MEMORY_STATISTIC=0
export GLOG_v=2

stage1_dir=output/stage1_t2i_256px/$(date +"%Y.%m.%d-%H.%M.%S")

msrun --bind_core=True --master_port=8200 --worker_num=8 --local_worker_num=8 --log_dir="$stage1_dir" \
  python train.py \
  --config configs/train/stage1_t2i_256px.yaml \
  --config "configs/model/dit_$MODEL.yaml" \
  --env.mode 0 \
  --env.jit_level O1 \
  --env.max_device_memory 59GB \
  --env.distributed True \
  --train.settings.zero_stage 2 \
  --train.output_path "$stage1_dir" \
  "$@"
