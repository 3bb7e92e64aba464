"""Layout-independent checkpoints: every rank's pieces gathered into the single-process arrays, and back.

A run saved under one layout loads under any other (TP=2 -> one process and back, ZeRO-3 -> ZeRO-0, ...), because
what is saved is exactly what a single-process run would save: `state_dict(model)` names and shapes for the model,
`optimizer_state(AdamW)` names and shapes (`adam_m.<param>`, `adam_v.<param>`, `global_step`) for the optimizer.
Gathering is collective (every rank must call it); every rank gets the full arrays and the caller lets rank 0 write.
This keeps one file format and no merge tool; the price is that one host holds a full copy while saving (fine up
to a few billion parameters; a 30B run would want per-rank files, see docs/parallel.md).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
from mindspore import Tensor

from mg.parallel.layers import shard_flat, shard_tp, unshard_tp
from mg.training.checkpoint import CheckpointError, tensor_to_numpy


def _full_array(value, info, groups, sliced):
    """One parameter's (or moment's) single-process array from this rank's piece; collective."""
    piece = value if isinstance(value, Tensor) else Tensor(np.asarray(value))
    if sliced:  # flat 1/dp slices -> this TP rank's piece
        gathered = tensor_to_numpy(groups.comm("dp").all_gather(piece.reshape(1, -1), 0))
        local = gathered.reshape(-1)[:int(np.prod(info.local_shape))].reshape(info.local_shape)
    else:
        local = tensor_to_numpy(piece)
    if info.tp_mode is None:
        return local
    pieces = tensor_to_numpy(groups.comm("tp").all_gather(Tensor(local[None]), 0))
    return unshard_tp(list(pieces), info.tp_mode, info.parts)


def _local_piece(full, info, groups, sliced):
    """Inverse of `_full_array` for this rank (no communication)."""
    full = np.asarray(full)
    if tuple(full.shape) != tuple(info.full_shape):
        raise CheckpointError(f"shape {tuple(full.shape)} does not match the model's {tuple(info.full_shape)}")
    tp = groups.comm("tp")
    piece = shard_tp(full, info.tp_mode, info.parts, tp.index, tp.size)
    if sliced:
        dp = groups.comm("dp")
        piece = shard_flat(piece, dp.index, dp.size)
    return piece


def _check_names(expected, given, what):
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{what} does not fit the model: missing {missing[:10]}, unexpected {unexpected[:10]}")


def gather_state_dict(model) -> dict[str, np.ndarray]:
    """`mg.training.checkpoint.state_dict` of the equivalent single-process model (collective)."""
    plan = model.parallel_plan
    return {p.name: _full_array(p, plan.params[p.name], plan.groups, plan.params[p.name].zero3)
            for p in model.trainable_params()}


def load_gathered_state_dict(model, tensors: Mapping[str, np.ndarray], optimizer=None) -> None:
    """Load single-process arrays into a parallelized model (each rank takes its piece; no communication).

    Pass the `ParallelAdamW` too if it exists already: its ZeRO slices are refreshed from the new weights."""
    plan = model.parallel_plan
    _check_names(plan.params, tensors, "state dict")
    for param in model.trainable_params():
        info = plan.params[param.name]
        try:
            piece = _local_piece(tensors[param.name], info, plan.groups, info.zero3)
        except CheckpointError as err:
            raise CheckpointError(f"parameter {param.name}: {err}") from None
        param.copy_(Tensor(piece, dtype=param.dtype))
    if optimizer is not None:
        optimizer.refresh_slices()


def _moment_pairs(optimizer):
    """(name, info, moment-1 Parameter, moment-2 Parameter, sliced) for every parameter of a ParallelAdamW."""
    inner = optimizer.inner
    for k, i in enumerate(optimizer.inner_order):
        param, info = optimizer.parameters[i], optimizer.infos[i]
        yield param.name, info, inner.moments1[k], inner.moments2[k], optimizer.slice_state or info.zero3


def gather_optimizer_state(optimizer) -> dict[str, np.ndarray]:
    """`mg.training.optim.optimizer_state` of the equivalent single-process AdamW (collective)."""
    groups = optimizer.groups
    state = {}
    for name, info, m, v, sliced in _moment_pairs(optimizer):
        state[f"adam_m.{name}"] = _full_array(m, info, groups, sliced)
        state[f"adam_v.{name}"] = _full_array(v, info, groups, sliced)
    state["global_step"] = tensor_to_numpy(optimizer.global_step)
    return state


def load_gathered_optimizer_state(optimizer, tensors: Mapping[str, np.ndarray]) -> None:
    """Load a single-process optimizer state into a `ParallelAdamW` (and refresh its slices of the weights)."""
    pairs = list(_moment_pairs(optimizer))
    expected = [f"adam_{k}.{name}" for name, *_ in pairs for k in "mv"] + ["global_step"]
    _check_names(expected, tensors, "optimizer state")
    for name, info, m, v, sliced in pairs:
        for key, target in ((f"adam_m.{name}", m), (f"adam_v.{name}", v)):
            try:
                piece = _local_piece(tensors[key], info, optimizer.groups, sliced)
            except CheckpointError as err:
                raise CheckpointError(f"optimizer state {key}: {err}") from None
            target.copy_(Tensor(piece, dtype=target.dtype))
    optimizer.global_step.copy_(Tensor(np.asarray(tensors["global_step"]), dtype=optimizer.global_step.dtype))
    optimizer.refresh_slices()


def gather_gradients(optimizer, grads) -> dict[str, np.ndarray]:
    """Single-process gradient arrays from `ParallelAdamW.reduce_gradients` output (collective; for tests/debug)."""
    return {optimizer.parameters[i].name: _full_array(g, info, optimizer.groups,
                                                       optimizer.slice_state or info.zero3)
            for i, (g, info) in enumerate(zip(grads, optimizer.infos))}
