#!/usr/bin/env bash
# Data parallel on one node of 8 devices with ZeRO-2 (optimizer state and gradients sharded): the layout for models
# whose weights fit one device (1B at 256 px). dp * tp * cp must equal --worker_num.
set -euo pipefail
msrun --worker_num=8 --local_worker_num=8 --master_port=8118 --log_dir=output/logs/dp8 --join=True \
    train.py --config configs/train/stage1_t2i_256px.yaml \
    --env.distributed true --parallel.dp 8 --parallel.tp 1 --parallel.cp 1 --train.settings.zero_stage 2 \
    --train.output_path output/stage1_dp8 "$@"
