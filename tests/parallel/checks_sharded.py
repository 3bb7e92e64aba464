"""Sharded-state checks run inside msrun workers: building a model without holding it whole, ZeRO-2's sliced
gradient accumulation, and per-rank checkpoints (same layout, another layout, one process). Each returns
{check name: error}; 0 is a pass unless the test says otherwise."""
import ctypes
import gc

import numpy as np

from mg.io import state_dict
from mg.models.dit import dit_config
from mg.optim import build_adamw, optimizer_state
from mg.parallel.checkpoint import full_arrays, gather_optimizer_state, gather_state_dict
from mg.parallel.groups import init_parallel
from mg.parallel.layers import flat_shard_length
from mg.parallel.memory import Layout, Workload, plan_memory
from mg.parallel.parallelize import parallelize
from mg.parallel.sharded_checkpoint import consolidate
from mg.parallel.zero import ParallelAdamW
from mg.profiling import peak_memory_growth
from mg.schedulers import FlowMatching
from mg.training.checkpoint import CheckpointManager
from mg.training.dit_init import build_dit
from mg.training.ema import EMA
from mg.training.state_io import LocalState, ParallelState
from mg.training.train_step import FlowMatchingTrainStep

from checks_model import (ADAMW, PER_RANK_BATCH, WORST, _dict_err, _tensors, make_batch, make_model, reference_weights,
                          tiny_config)

# Large enough that a whole model (~560 MB) stands far above a quarter of it plus one whole parameter (23 MB)
BIG = dict(depth=8, dim=1024, ffn_dim=2816, num_heads=16, in_channels=16, text_encoders={"ul2": 64}, max_t=4,
           max_h=8, max_w=8)
CONSTRUCTION_ALLOWANCE = 1.5  # peak growth while building, in units of this rank's own shard
# Resident memory is a noisy measure: about one build in ten, a runtime or allocator thread adds a few hundred MiB
# to the peak. What the code holds shows in every build, so a check passes if one of a few builds stays under.
BUILD_ATTEMPTS = 3


def _return_freed_memory():
    """Free what earlier checks left (models hold reference cycles) and hand freed heap pages back to the system,
    so that the resident memory rises by what a build allocates."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def check_sharded_construction(name, dp, tp, zero_stage=0):
    """Building a d1024x8 model under the layout rises this rank's resident memory by at most 1.5x its own
    parameters in one of up to three builds (error: the excess, in units of the shard), and the gathered
    pieces equal a one-process build from the same seed (error: max abs difference). Run it after collectives have
    run: their first use allocates a few hundred MiB of the process baseline."""
    groups = init_parallel(dp=dp, tp=tp)
    config = dit_config("tiny", **BIG)
    for _ in range(BUILD_ATTEMPTS):
        model = None  # the last attempt's model must be freed before the next is measured
        _return_freed_memory()
        model, growth = peak_memory_growth(lambda: build_dit(config, 7, groups, zero_stage=zero_stage))
        shard = sum(int(p.nbytes) for p in model.trainable_params())
        if growth <= CONSTRUCTION_ALLOWANCE * shard:
            break
    key = f"build/{name}"
    WORST[f"{key}/memory"] = f"rose {growth / 2 ** 20:.0f} MiB building a {shard / 2 ** 20:.0f} MiB shard"
    gathered = gather_state_dict(model)
    del model
    single = state_dict(build_dit(config, 7))
    return {f"{key}/memory": max(0.0, growth / shard - CONSTRUCTION_ALLOWANCE),
            f"{key}/memory_ratio": growth / shard,
            f"{key}/equals_one_process": _dict_err(gathered, single, f"{key}/equals_one_process")}


def _zero_run(groups, zero_stage, steps, accumulation):
    flow = FlowMatching()
    model = make_model(reference_weights())
    parallelize(model, groups, zero_stage=zero_stage)
    optimizer = ParallelAdamW(model, **ADAMW)
    step = FlowMatchingTrainStep(model, optimizer, flow, jit=False, accumulation_steps=accumulation)
    rows = slice(groups.dp_rank * PER_RANK_BATCH, (groups.dp_rank + 1) * PER_RANK_BATCH)
    losses = []
    for i in range(steps * accumulation):
        batch = make_batch(PER_RANK_BATCH * groups.dp, seed=20 + i)
        losses.append(float(step(*_tensors(*batch, rows=rows)).asnumpy()))
    buffers = sum(int(b.nbytes) for b in step.accumulated)
    return losses, gather_state_dict(model), buffers, optimizer


def check_zero2_accumulation(name, dp, steps=3, accumulation=2):
    """ZeRO-2 with gradient accumulation against ZeRO-0 under the same dp: equal losses and weights, and
    accumulation buffers of exactly this rank's 1/dp slices (error: bytes off) where ZeRO-0 holds whole ones."""
    groups = init_parallel(dp=dp)
    losses0, weights0, buffers0, _ = _zero_run(groups, 0, steps, accumulation)
    losses2, weights2, buffers2, optimizer = _zero_run(groups, 2, steps, accumulation)
    slices = 4 * sum(flat_shard_length(p.size, dp) for p in optimizer.parameters)
    key = f"zero2/{name}"
    WORST[f"{key}/accumulation_bytes"] = f"ZeRO-0 {buffers0} bytes, ZeRO-2 {buffers2} bytes (1/{buffers0 / buffers2:.3f})"
    return {f"{key}/losses": float(np.abs(np.subtract(losses0, losses2)).max()),
            f"{key}/weights": _dict_err(weights2, weights0, f"{key}/weights"),
            f"{key}/accumulation_bytes": float(abs(buffers2 - slices)),
            f"{key}/whole_buffers_ratio": buffers0 / buffers2}


class _Run:
    """A parallel (or one-process) model, AdamW, EMA and train step, as the trainer builds them."""

    def __init__(self, groups, sp=False, zero_stage=0, seed=0):
        self.model = make_model(reference_weights(seed))
        if groups is not None:
            parallelize(self.model, groups, sp=sp, zero_stage=zero_stage)
            self.optimizer = ParallelAdamW(self.model, **ADAMW)
            self.state = ParallelState(self.model, self.optimizer, groups)
        else:
            self.optimizer = build_adamw(self.model.trainable_params(), **ADAMW)
            self.state = LocalState(self.model, self.optimizer)
        targets, names, publish = self.state.ema_targets()
        self.ema = EMA(targets, decay=0.5, names=names, publish=publish)
        self.step = FlowMatchingTrainStep(self.model, self.optimizer, FlowMatching(), jit=False)
        self.groups = groups

    def train(self, first, count):
        dp = 1 if self.groups is None else self.groups.dp
        rank = 0 if self.groups is None else self.groups.dp_rank
        rows = slice(rank * PER_RANK_BATCH, (rank + 1) * PER_RANK_BATCH)
        losses = []
        for i in range(first, first + count):
            losses.append(float(self.step(*_tensors(*make_batch(PER_RANK_BATCH * dp, seed=40 + i),
                                                     rows=rows)).asnumpy()))
            self.ema.update(i + 1)
        return losses

    def gathered(self):
        """(weights, AdamW state, EMA) as single-process arrays (collective)."""
        if self.groups is None:
            return state_dict(self.model), optimizer_state(self.optimizer), self.ema.state_dict()
        items = [(shadow, info, self.optimizer.slice_state or info.zero3)
                 for shadow, info in zip(self.ema.shadows, self.optimizer.infos)]
        ema = dict(zip(self.ema.names, full_arrays(items, self.groups)))
        return gather_state_dict(self.model), gather_optimizer_state(self.optimizer), ema


def _errors(key, got, want):
    return {f"{key}/{part}": _dict_err(g, w, f"{key}/{part}")
            for part, g, w in zip(("weights", "adamw_state", "ema"), got, want)}


def check_sharded_checkpoint(name, dp, tp, sp=False, zero_stage=0, other=None, out_dir="."):
    """A per-rank checkpoint of the layout: resuming under it gives bit-identical losses, weights, AdamW state and
    EMA; it loads exactly under the layout `other` (dp, tp, sp, zero_stage), and into one process, directly and
    through consolidation."""
    groups = init_parallel(dp=dp, tp=tp)
    manager = CheckpointManager(f"{out_dir}/sharded_{name}", keep_last=None)
    run = _Run(groups, sp, zero_stage)
    run.train(0, 2)
    run.state.save(manager, 2, {}, run.ema, {"ema_updates": run.ema.num_updates})
    written = sum(a.nbytes for k, a in run.state.owned_tensors(run.ema).items() if k != "optimizer/global_step")
    planned = plan_memory(tiny_config(), Layout(dp, tp, 1, sp, zero_stage), Workload(1, 1, 8, 8, 8)).checkpoint
    saved = run.gathered()
    losses = run.train(2, 2)
    after = run.gathered()
    path = manager.final_dir_for(2)

    resumed = _Run(groups, sp, zero_stage, seed=5)
    resumed.state.load(path, resumed.ema)
    key = f"sharded/{name}"
    results = {f"{key}/resume_losses": float(np.abs(np.subtract(resumed.train(2, 2), losses)).max()),
               f"{key}/planned_checkpoint_bytes": float(abs(planned - written)),
               **_errors(f"{key}/resume", resumed.gathered(), after)}

    if other is not None:
        o_dp, o_tp, o_sp, o_zero = other
        moved = _Run(init_parallel(dp=o_dp, tp=o_tp), o_sp, o_zero, seed=6)
        moved.state.load(path, moved.ema)
        results.update(_errors(f"{key}/other_layout", moved.gathered(), saved))

    alone = _Run(None, seed=7)
    alone.state.load(path, alone.ema)
    results.update(_errors(f"{key}/one_process", alone.gathered(), saved))
    weights, _ = consolidate(path)
    results[f"{key}/consolidated_ema"] = _dict_err(weights, saved[2], f"{key}/consolidated_ema")
    return results

