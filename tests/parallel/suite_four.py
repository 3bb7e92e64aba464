"""Checks run by 4 msrun workers: collectives on sub-groups (emulated all-gather / reduce-scatter, PyNative and jit)
and mixed layouts (dp x tp with SP and ZeRO-3, cp x tp with SP, dp x cp with ZeRO-2) against one process, SP+CP
sampling, and a ZeRO-3 + TP checkpoint moved to one process and back; building a large model under tp4 / dp4
ZeRO-3, ZeRO-2 accumulation over 4 ranks, and a dp2 x tp2 ZeRO-1 per-rank checkpoint resumed, moved to dp4 ZeRO-2
and to one process."""
from checks_collectives import check_collectives
from checks_model import WORST, check_layout, check_sampling
from checks_sharded import check_sharded_checkpoint, check_sharded_construction, check_zero2_accumulation
from suite_two import timed

from mg.parallel.groups import init_parallel


def run(results, out_dir):
    timed(results, check_collectives, init_parallel(dp=2, tp=2), "d2t2")
    timed(results, check_collectives, init_parallel(cp=2, tp=2), "c2t2", kinds=("tp",),
          op_names=("GatherSharded", "ScatterSum", "SplitReplicated"), axes=(1,), jit=True)
    timed(results, check_sharded_construction, "tp4", dp=1, tp=4)  # early: the process has allocated little
    timed(results, check_sharded_construction, "dp4_zero3", dp=4, tp=1, zero_stage=3)
    timed(results, check_layout, "d2t2_sp_zero3", dp=2, tp=2, cp=1, sp=True, zero_stage=3, checkpoint_dir=out_dir)
    timed(results, check_layout, "c2t2_sp", dp=1, tp=2, cp=2, sp=True)
    timed(results, check_layout, "d2c2_zero2", dp=2, tp=1, cp=2, zero_stage=2)
    timed(results, check_sampling, "c2t2_sp", tp=2, cp=2, sp=True)
    timed(results, check_zero2_accumulation, "dp4", dp=4)
    timed(results, check_sharded_checkpoint, "d2t2_zero1", dp=2, tp=2, zero_stage=1, other=(4, 1, False, 2),
          out_dir=out_dir)
    results["__worst__"] = WORST
