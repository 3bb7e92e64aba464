#!/usr/bin/env bash
# On a CPU: the distributed tests (2- and 4-process msrun launches) and the per-layout communication volume of the
# toy model with 4 processes.
set -euo pipefail
python -m pytest tests/parallel -q
msrun --worker_num=4 --local_worker_num=4 --master_port=8119 --log_dir=output/logs/comm_volume --join=True \
    tools/benchmark_comm_volume.py "$@"
cat output/logs/comm_volume/worker_0.log | grep -v '^\['
