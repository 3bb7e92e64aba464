#!/usr/bin/env bash
# Tensor + sequence parallelism inside groups of 4 devices, 2 data-parallel replicas on one 8-device node (5B at
# 256 px). TP divides the heads (24), the width (3072) and the FFN width (8192); SP keeps norms and residuals on
# token shards so activations shrink by tp at the same communication volume.
set -euo pipefail
msrun --worker_num=8 --local_worker_num=8 --master_port=8118 --log_dir=output/logs/dp2_tp4 --join=True \
    train.py --config configs/train/stage2_t2iv_256px.yaml \
    --model.depth 32 --model.dim 3072 --model.ffn_dim 8192 --model.num_heads 24 \
    --env.distributed true --parallel.dp 2 --parallel.tp 4 --parallel.sp true --train.settings.zero_stage 1 \
    --train.output_path output/stage2_dp2_tp4 "$@"
