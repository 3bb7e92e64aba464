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

from mg.io import check_names, copy_into, tensor_to_numpy
from mg.parallel.layers import shard_flat, shard_tp, unshard_tp


def _gather_rows(comm, flats):
    """All-gather several flat float32 arrays over `comm` in one collective: per array a (group size, n) array."""
    if comm.size == 1 or not flats:
        return [f[None] for f in flats]
    buffer = Tensor(np.concatenate(flats)[None])
    rows = tensor_to_numpy(comm.all_gather(buffer, 0))
    bounds = np.cumsum([0] + [f.size for f in flats])
    return [rows[:, a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def full_arrays(items, groups):
    """Single-process arrays from this rank's pieces; `items` = [(value, ParamInfo, sliced)], sliced meaning a flat
    1/dp ZeRO slice. Collective: one all-gather over dp (slices) and one over tp (TP pieces) for all items."""
    values = [tensor_to_numpy(v).astype(np.float32) if isinstance(v, Tensor) else np.asarray(v, np.float32)
              for v, _, _ in items]
    sliced = [i for i, (_, _, s) in enumerate(items) if s]
    for i, rows in zip(sliced, _gather_rows(groups.comm("dp"), [values[i].reshape(-1) for i in sliced])):
        shape = items[i][1].local_shape
        values[i] = rows.reshape(-1)[:int(np.prod(shape))].reshape(shape)
    split = [i for i, (_, info, _) in enumerate(items) if info.tp_mode is not None]
    for i, rows in zip(split, _gather_rows(groups.comm("tp"), [values[i].reshape(-1) for i in split])):
        info = items[i][1]
        values[i] = unshard_tp([row.reshape(info.local_shape) for row in rows], info.tp_mode, info.parts)
    return values


def _local_piece(full, info, groups, sliced):
    """This rank's piece of a single-process array (shaped `info.full_shape`): the inverse of `full_arrays` (no
    communication)."""
    tp = groups.comm("tp")
    piece = shard_tp(np.asarray(full), info.tp_mode, info.parts, tp.index, tp.size)
    if sliced:
        dp = groups.comm("dp")
        piece = shard_flat(piece, dp.index, dp.size)
    return piece


def gather_arrays(model, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Single-process arrays from this rank's arrays shaped like the model's parameters, keyed by parameter name
    (the parameters themselves, or e.g. EMA shadows). Collective: every rank calls it with the same names."""
    plan = model.parallel_plan
    check_names({p.name: p for p in model.trainable_params()}, arrays, "arrays do not fit this rank's parameters")
    names = list(plan.params)
    full = full_arrays([(arrays[n], plan.params[n], plan.params[n].zero3) for n in names], plan.groups)
    return dict(zip(names, full))


def local_arrays(model, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """This rank's pieces of single-process arrays keyed by parameter name: the inverse of `gather_arrays`."""
    plan = model.parallel_plan
    check_names({name: info.full_shape for name, info in plan.params.items()}, tensors,
                "state dict does not fit the single-process model")
    return {name: _local_piece(tensors[name], info, plan.groups, info.zero3) for name, info in plan.params.items()}


def gather_state_dict(model) -> dict[str, np.ndarray]:
    """`mg.io.state_dict` of the equivalent single-process model (collective)."""
    return gather_arrays(model, {p.name: p for p in model.trainable_params()})


def load_gathered_state_dict(model, tensors: Mapping[str, np.ndarray], optimizer=None) -> None:
    """Load single-process arrays into a parallelized model (each rank takes its piece; no communication).

    Pass the `ParallelAdamW` too if it exists already: its ZeRO slices are refreshed from the new weights."""
    pieces = local_arrays(model, tensors)
    for param in model.trainable_params():
        copy_into(param, pieces[param.name])
    if optimizer is not None:
        optimizer.refresh_slices()


def _moment_pairs(optimizer):
    """(name, info, moment-1 Parameter, moment-2 Parameter, sliced) for every parameter of a ParallelAdamW."""
    inner = optimizer.inner
    for k, i in enumerate(optimizer.inner_order):
        param, info = optimizer.parameters[i], optimizer.infos[i]
        yield param.name, info, inner.moments1[k], inner.moments2[k], optimizer.slice_state or info.zero3


def gather_optimizer_state(optimizer) -> dict[str, np.ndarray]:
    """`mg.optim.optimizer_state` of the equivalent single-process AdamW (collective)."""
    pairs = list(_moment_pairs(optimizer))
    items = ([(m, info, sliced) for _, info, m, _, sliced in pairs]
             + [(v, info, sliced) for _, info, _, v, sliced in pairs])
    arrays = full_arrays(items, optimizer.groups)
    names = [f"adam_m.{name}" for name, *_ in pairs] + [f"adam_v.{name}" for name, *_ in pairs]
    state = dict(zip(names, arrays))
    state["global_step"] = tensor_to_numpy(optimizer.global_step)
    return state


def load_gathered_optimizer_state(optimizer, tensors: Mapping[str, np.ndarray]) -> None:
    """Load a single-process optimizer state into a `ParallelAdamW` (and refresh its slices of the weights)."""
    pairs = list(_moment_pairs(optimizer))
    expected = {f"adam_{k}.{name}": info.full_shape for name, info, *_ in pairs for k in "mv"}
    check_names({**expected, "global_step": optimizer.global_step}, tensors,
                "optimizer state does not fit the single-process optimizer")
    for name, info, m, v, sliced in pairs:
        for key, target in ((f"adam_m.{name}", m), (f"adam_v.{name}", v)):
            copy_into(target, _local_piece(tensors[key], info, optimizer.groups, sliced))
    copy_into(optimizer.global_step, tensors["global_step"])
    optimizer.refresh_slices()
