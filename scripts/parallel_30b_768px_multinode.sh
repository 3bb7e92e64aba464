#!/usr/bin/env bash
# 30B at 768 px (73K tokens per video) on 16 nodes x 8 devices = 128 processes:
#   tp 8 + SP inside each node, cp 4 across 4 nodes (K/V all-gathers only), dp 4 with ZeRO-3 over the rest.
# Run once per node with NODE_RANK=0..15 and MASTER_ADDR set to node 0.
set -euo pipefail
: "${NODE_RANK:?set NODE_RANK (0..15)}" "${MASTER_ADDR:?set MASTER_ADDR to node 0}"
msrun --worker_num=128 --local_worker_num=8 --master_addr="$MASTER_ADDR" --master_port=8118 --node_rank="$NODE_RANK" \
    --log_dir=output/logs/30b_768px --join=True \
    train.py --config configs/train/stage3_t2iv_768px.yaml \
    --model.flavor 30B --model.recompute_every 1 \
    --env.distributed true --parallel.dp 4 --parallel.tp 8 --parallel.cp 4 --parallel.sp true --train.settings.zero_stage 3 \
    --train.output_path output/stage3_30b "$@"
