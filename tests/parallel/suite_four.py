"""Checks run by 4 msrun workers: collectives on sub-groups (emulated all-gather / reduce-scatter, PyNative and jit)
and mixed layouts (dp x tp with SP and ZeRO-3, cp x tp with SP, dp x cp with ZeRO-2) against one process, SP+CP
sampling, and a ZeRO-3 + TP checkpoint moved to one process and back."""
from checks_collectives import check_collectives
from checks_model import WORST, check_layout, check_sampling
from suite_two import timed

from mg.parallel.groups import init_parallel


def run(results, out_dir):
    timed(results, check_collectives, init_parallel(dp=2, tp=2), "d2t2")
    timed(results, check_collectives, init_parallel(cp=2, tp=2), "c2t2", kinds=("tp",),
          op_names=("GatherSharded", "ScatterSum", "SplitReplicated"), axes=(1,), jit=True)
    timed(results, check_layout, "d2t2_sp_zero3", dp=2, tp=2, cp=1, sp=True, zero_stage=3, checkpoint_dir=out_dir)
    timed(results, check_layout, "c2t2_sp", dp=1, tp=2, cp=2, sp=True)
    timed(results, check_layout, "d2c2_zero2", dp=2, tp=1, cp=2, zero_stage=2)
    timed(results, check_sampling, "c2t2_sp", tp=2, cp=2, sp=True)
    results["__worst__"] = WORST
