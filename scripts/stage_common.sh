# Sourced by scripts/stage{1,2,3,4}_*.sh: the layout that fits a 64 GB Ascend 910B for MODEL at a stage, and the msrun
# launch on one node or several. Settings (environment variables):
#   MODEL=1B|5B|30B (default 5B); DATA: the datasets folder (default the seed's ../../datasets/mixkit-100videos);
#   OUTPUT: the run folder (default output/<stage>/<date>); WORKERS: processes (default the layout's cards; tp and cp
#   stay, dp takes the rest); several nodes (more than 8 processes): NODE_RANK and MASTER_ADDR, run once per node;
#   PORT (8200), BIND_CORE (True).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MODEL=${MODEL:-5B}
DATA=${DATA:-../../datasets/mixkit-100videos}
export ASCEND_RT_VISIBLE_DEVICES=${ASCEND_RT_VISIBLE_DEVICES:-0,1,2,3,4,5,6,7}
export MS_MEMORY_STATISTIC=0
export GLOG_v=${GLOG_v:-2}

# layout <stage>: the fewest cards and cheapest layout whose memory plan fits (tools/plan_memory.py --fit_table true,
# docs/training.md "Configs that fit"), as CARDS TP CP ZERO RECOMPUTE, and LAYOUT: its train.py options
layout() {
  local fit
  case "$MODEL/$1" in
    1B/1 | 1B/2) fit="8 1 1 2 0" ;;
    1B/3 | 1B/4) fit="8 1 1 2 1" ;;
    5B/1) fit="8 1 1 3 0" ;;
    5B/2 | 5B/3 | 5B/4) fit="8 1 1 3 1" ;;
    30B/1 | 30B/2) fit="16 1 1 3 1" ;;
    30B/3) fit="32 4 1 3 1" ;;
    30B/4) fit="16 8 1 3 1" ;;
    *) echo "MODEL must be 1B, 5B or 30B (got $MODEL)" >&2; exit 2 ;;
  esac
  read -r CARDS TP CP ZERO RECOMPUTE <<< "$fit"
  LAYOUT=(--parallel.tp "$TP" --parallel.cp "$CP" --parallel.sp "$([ "$TP" -gt 1 ] && echo true || echo false)"
          --train.settings.zero_stage "$ZERO" --model.recompute_every "$RECOMPUTE")
}

# launch <run folder> <train.py options...>
launch() {
  local run=$1 workers=${WORKERS:-$CARDS} per_node=8 nodes=()
  shift
  if (( workers > per_node )); then
    : "${NODE_RANK:?set NODE_RANK (the index of this node) and MASTER_ADDR: $workers processes need several nodes}"
    : "${MASTER_ADDR:?set MASTER_ADDR to the first node}"
    nodes=(--master_addr="$MASTER_ADDR" --node_rank="$NODE_RANK")
  else
    per_node=$workers
  fi
  msrun --bind_core="${BIND_CORE:-True}" --master_port="${PORT:-8200}" --worker_num="$workers" \
    --local_worker_num="$per_node" "${nodes[@]}" --log_dir="$run" --join=True \
    python train.py "$@"
}
