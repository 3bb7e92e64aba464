"""`parallelize(model, groups, sp, zero_stage)`: turn a single-process MovieGenDiT into this rank's part of a
dp x cp x tp layout (torchtitan style: the model file knows nothing of this; layers are swapped here).

What is swapped, per transformer block:
    self-attention   qkv column-parallel (q, k, v sharded by heads), proj row-parallel; with CP, K/V all-gathered
    cross-attention  q column-parallel, kv column-parallel on the (replicated) text, proj row-parallel
    SwiGLU           w13 column-parallel (gate, up sharded), w2 row-parallel
    the block        with SP and/or CP, runs on this rank's share of the tokens (`SequenceShardedBlock`)
With ZeRO-3 every projection of the model keeps a 1/dp slice of its weight and gathers it when used.

The returned `ParallelPlan` (also kept as `model.parallel_plan`) records for every parameter its single-process name
and shape, how TP and ZeRO-3 slice it, and over which extra group its gradient must be summed: parameters inside the
blocks see only their rank's tokens under CP (and under SP, unless TP-sharded), so their gradients are partial sums.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

import numpy as np
from mindspore import nn
from mindspore.nn.utils import no_init_parameters

from mg.models.dit.layers import Linear
from mg.parallel.groups import ParallelGroups, get_parallel_groups
from mg.parallel.deferred import is_deferred, materialize
from mg.parallel.layers import (ContextParallelSelfAttention, ParallelLinear, SequenceShardedBlock, flat_shard_length,
                                shard_shape)

ZERO_STAGES = (0, 1, 2, 3)


@dataclass(frozen=True)
class ParamInfo:
    full_shape: tuple           # shape in the single-process model
    local_shape: tuple          # shape of this TP rank's piece (before ZeRO-3 flattening)
    tp_mode: Optional[str]      # None, "column" or "row"
    parts: int                  # fused parts of a column-parallel weight
    zero3: bool                 # the Parameter is this rank's flat 1/dp slice of the local piece
    reduce_group: Optional[str]  # extra group its gradient is summed over before data-parallel averaging


@dataclass
class ParallelPlan:
    groups: ParallelGroups
    sp: bool
    zero_stage: int
    params: dict  # parameter name -> ParamInfo, in model.trainable_params() order


_BLOCK_LINEARS = (("attn.qkv", "column", 3, True), ("attn.proj", "row", 1, True),
                  ("cross_attn.q", "column", 1, True), ("cross_attn.kv", "column", 2, False),
                  ("cross_attn.proj", "row", 1, True), ("ffn.w13", "column", 2, True), ("ffn.w2", "row", 1, True))


def _set_child(root, path, cell):
    *parents, name = path.split(".")
    parent = root
    for part in parents:
        parent = parent[int(part)] if isinstance(parent, (nn.CellList, nn.SequentialCell)) else getattr(parent, part)
    if isinstance(parent, (nn.CellList, nn.SequentialCell)):
        parent[int(name)] = cell
    else:
        setattr(parent, name, cell)


def _get_child(root, path):
    cell = root
    for part in path.split("."):
        cell = cell[int(part)] if isinstance(cell, (nn.CellList, nn.SequentialCell)) else getattr(cell, part)
    return cell


_BLOCK_LINEAR = re.compile(r"blocks\.\d+\.(?P<path>.+)\.(?P<kind>weight|bias)")
_MODES = {path: (mode, parts) for path, mode, parts, _ in _BLOCK_LINEARS}


def tensor_parallel_mode(name):
    """(TP mode, fused parts) of a parameter under tensor parallelism, from its single-process name: the block
    projections' weights are column- or row-parallel, a column-parallel projection's bias follows its output
    features; everything else is replicated (None, 1)."""
    match = _BLOCK_LINEAR.fullmatch(name)
    if match is None or match["path"] not in _MODES:
        return None, 1
    mode, parts = _MODES[match["path"]]
    return (mode if match["kind"] == "weight" or mode == "column" else None), parts


def shard_plan(model, dp=1, tp=1, sp=False, zero_stage=0):
    """{parameter name: ParamInfo} of the single-process `model` (in trainable_params order) under a layout with
    `dp` data-parallel and `tp` tensor-parallel ranks: the one statement of how parallelize slices every parameter
    (CP and SP slice none; they decide which gradients are partial sums). Pure arithmetic on names and shapes, so it
    also works on a model built without its weights (mindspore.nn.utils.no_init_parameters)."""
    linear_weights = {f"{path}.weight" for path, cell in model.cells_and_names() if type(cell) is Linear}
    seq_kind = "seq" if sp else "cp"
    plan = {}
    for param in model.trainable_params():
        name, full = param.name, tuple(param.shape)
        mode, parts = tensor_parallel_mode(name)
        tp_mode = mode if tp > 1 else None
        local = shard_shape(full, tp_mode, tp)
        reduce_group = None
        if name.startswith("blocks."):
            # TP-sharded weights see every token of their CP shard (SP gathers first); the rest only their shard
            reduce_group = "cp" if tp_mode is not None else seq_kind
        plan[name] = ParamInfo(full, local, tp_mode, parts, zero_stage == 3 and dp > 1 and name in linear_weights,
                               reduce_group)
    return plan


def parallelize(model, groups: Optional[ParallelGroups] = None, sp: bool = False, zero_stage: int = 0):
    """Swap the layers of `model` (a MovieGenDiT, in place) for this rank's parallel ones; returns the plan.

    sp: sequence parallelism on the TP group. zero_stage: 0-3 (only 3 changes the model: sliced projections).
    A model built without its weights (mg.parallel.deferred) stays so: its sliced parameters draw only their piece
    when materialised. A built model's pieces are cut from its weights now.
    """
    groups = groups or get_parallel_groups()
    if zero_stage not in ZERO_STAGES:
        raise ValueError(f"train.settings.zero_stage must be one of {ZERO_STAGES}, got {zero_stage!r}")
    if getattr(model, "parallel_plan", None) is not None:
        raise ValueError("this model is already parallelized")
    config = model.config
    if config.attention != "full" and (groups.tp > 1 or groups.cp > 1 or sp):
        raise ValueError(f"model.attention = {config.attention!r} runs under data parallelism and ZeRO only; tensor, "
                         f"sequence and context parallelism (tp={groups.tp}, cp={groups.cp}, sp={sp}) shard "
                         "self-attention's heads and tokens (docs/linear_attention.md)")
    for name, value in (("num_heads", config.num_heads), ("dim", config.dim), ("ffn_dim", config.ffn_dim)):
        if value % groups.tp:
            raise ValueError(f"tensor parallelism tp={groups.tp} must divide the model's {name} ({value})")
    tp_comm, cp_comm = groups.comm("tp"), groups.comm("cp")
    zero_comm = groups.comm("dp") if zero_stage == 3 else None
    infos = shard_plan(model, groups.dp, groups.tp, sp, zero_stage)

    deferred = is_deferred(model)
    with no_init_parameters():
        for i, block in enumerate(model.blocks):
            for path, mode, parts, seq in _BLOCK_LINEARS:
                if path.startswith("attn.") and config.attention != "full":
                    continue  # MATE's projections: only ZeRO-3 slices them, with the projections outside the blocks
                linear = _get_child(block, path)
                _set_child(block, path, ParallelLinear(linear, mode, parts, tp_comm, sp and seq, zero_comm))
            if groups.cp > 1:
                block.attn = ContextParallelSelfAttention(block.attn, cp_comm)
        if zero_comm is not None:  # the projections outside the blocks
            for path, cell in list(model.cells_and_names()):
                if type(cell) is Linear:
                    _set_child(model, path, ParallelLinear(cell, zero_comm=zero_comm))
    if not deferred:
        materialize(model)

    seq_kind = "seq" if sp else "cp"
    if groups.cp > 1 or (sp and groups.tp > 1):
        depth = len(model.blocks)
        model.blocks = nn.CellList([
            SequenceShardedBlock(block, groups.comm(seq_kind), groups.comm(seq_kind), cp_comm, i == 0,
                                 i == depth - 1) for i, block in enumerate(model.blocks)])

    for structural, param in model.parameters_and_names():
        name = structural.replace(".inner.", ".")
        if name not in infos:
            raise RuntimeError(f"parallelize produced an unknown parameter {name!r}")
        param.name = name  # the single-process name, whatever wrappers now sit in between
        info = infos[name]
        expected = (flat_shard_length(int(np.prod(info.local_shape)), groups.dp),) if info.zero3 else info.local_shape
        if tuple(param.shape) != expected:
            raise RuntimeError(f"parallelize made {name} {tuple(param.shape)}, its plan says {expected}")
    plan = ParallelPlan(groups, sp, zero_stage, infos)
    model.parallel_plan = plan
    return plan
