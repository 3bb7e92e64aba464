"""Checks run by 2 msrun workers: the memory plan against what each layout allocates (and, for the first, the measured
activations), collectives on the world group (native AllGather), TP (with its checkpoint moved to one process and
back), CP and ZeRO-0..3 (ZeRO-1 and -3 also with MATE blocks) against one process, a dp=2 training run, a jitted TP
step (also with recompute), SP/CP sampling and the byte meter; building a large model under tp2 / dp2 ZeRO-3, ZeRO-2
accumulation, and a ZeRO-3 per-rank checkpoint resumed, moved to tp2 + SP and to one process."""
import time

from checks_collectives import check_collectives
from checks_sharded import check_sharded_checkpoint, check_sharded_construction, check_zero2_accumulation
from checks_model import (MATE_MODEL, WORST, check_comm_volume, check_jit_step, check_layout, check_memory_plan,
                          check_sampling, check_training_run)

from mg.parallel.groups import init_parallel


def timed(results, fn, *args, **kwargs):
    start = time.perf_counter()
    results.update(fn(*args, **kwargs))
    results.setdefault("__seconds__", {})[f"{fn.__name__}{args}"] = round(time.perf_counter() - start, 1)


def run(results, out_dir):
    timed(results, check_memory_plan, "cp2", dp=1, tp=1, cp=2, measure=True)  # first: a fresh memory pool
    timed(results, check_memory_plan, "tp2_sp", dp=1, tp=2, cp=1, sp=True)
    timed(results, check_memory_plan, "dp2_zero3", dp=2, tp=1, cp=1, zero_stage=3)
    timed(results, check_memory_plan, "dp2_zero1", dp=2, tp=1, cp=1, zero_stage=1)
    timed(results, check_memory_plan, "dp2_zero2", dp=2, tp=1, cp=1, zero_stage=2)
    timed(results, check_collectives, init_parallel(dp=2), "world2")
    timed(results, check_sharded_construction, "tp2", dp=1, tp=2)
    timed(results, check_sharded_construction, "dp2_zero3", dp=2, tp=1, zero_stage=3)
    timed(results, check_layout, "tp2", dp=1, tp=2, cp=1, checkpoint_dir=out_dir)
    timed(results, check_layout, "cp2", dp=1, tp=1, cp=2)
    for stage in (0, 1, 2, 3):
        timed(results, check_layout, f"dp2_zero{stage}", dp=2, tp=1, cp=1, zero_stage=stage)
    for stage in (1, 3):
        timed(results, check_layout, f"dp2_zero{stage}_mate", dp=2, tp=1, cp=1, zero_stage=stage, **MATE_MODEL)
    timed(results, check_training_run, "dp2_zero1", dp=2)
    timed(results, check_sampling, "tp2_sp", tp=2, cp=1, sp=True)
    timed(results, check_sampling, "cp2", tp=1, cp=2, sp=False)
    timed(results, check_jit_step, "tp2", dp=1, tp=2)
    timed(results, check_jit_step, "tp2_recompute", dp=1, tp=2, recompute=True)
    timed(results, check_comm_volume)
    timed(results, check_zero2_accumulation, "dp2", dp=2)
    timed(results, check_sharded_checkpoint, "dp2_zero3", dp=2, tp=1, zero_stage=3, other=(1, 2, True, 0),
          out_dir=out_dir)
    results["__worst__"] = WORST
