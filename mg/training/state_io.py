"""What a checkpoint takes from and gives back to the model, the optimizer and the EMA.

One process (`LocalState`) writes one checkpoint file. A parallel layout (`ParallelState`) writes a sharded
checkpoint directory (mg.parallel.sharded_checkpoint): every (tp, dp) rank writes only the 1/dp flat slices of its
TP pieces (weights, AdamW moments, EMA shadows), rank 0 commits the directory once every rank has written, and
nothing is gathered. Either form loads under any layout: a sharded directory is read piece by piece (under the same
layout each rank reads only its own file), a single file is split on load.
"""
from __future__ import annotations

import logging
import mindspore as ms
import numpy as np

from mg.io import check_names, copy_into, load_checkpoint, load_state_dict, state_dict, tensor_to_numpy
from mg.optim import load_optimizer_state, optimizer_state
from mg.parallel import load_gathered_optimizer_state, load_gathered_state_dict, local_arrays
from mg.parallel.layers import shard_flat
from mg.parallel.parallelize import tensor_parallel_mode
from mg.parallel.sharded_checkpoint import (Piece, ShardedCheckpoint, TensorLayout, build_manifest,
                                            is_sharded_checkpoint, write_shard)
from mg.training.checkpoint import merge_namespaces, split_namespaces

_logger = logging.getLogger(__name__)


def read_spaces(path):
    """(namespaces {space: {name: array}}, metadata) of a checkpoint file or sharded directory, read whole."""
    if is_sharded_checkpoint(path):
        checkpoint = ShardedCheckpoint(path)
        return split_namespaces({key: checkpoint.read_full(key) for key in checkpoint.keys()}), checkpoint.metadata
    tensors, metadata = load_checkpoint(path)
    return split_namespaces(tensors), metadata


class LocalState:
    """One process: it writes checkpoint files."""
    writes = True

    def __init__(self, model, optimizer):
        self.model, self.optimizer = model, optimizer

    def ema_targets(self):
        """(tensors the EMA tracks, their names, what to call after overwriting them)."""
        params = list(self.model.trainable_params())
        return params, [p.name for p in params], None

    def save(self, manager, step, spaces, ema, metadata):
        """Save `spaces` ({namespace: {name: array}} beyond model and optimizer) and the EMA; returns the path."""
        parts = {"model": state_dict(self.model), "optimizer": optimizer_state(self.optimizer), **spaces}
        if ema is not None:
            parts["ema"] = ema.state_dict()
        return manager.save(step, merge_namespaces(parts), metadata)

    def load(self, path, ema):
        """Load model, optimizer and EMA; returns (all namespaces, metadata) for the caller's other parts."""
        spaces, metadata = read_spaces(path)
        load_state_dict(self.model, spaces["model"])
        load_optimizer_state(self.optimizer, spaces["optimizer"])
        if ema is not None:
            ema.load_state_dict(_ema_space(spaces, path), metadata["ema_updates"])
        return spaces, metadata


def _ema_space(spaces, path):
    if "ema" not in spaces:
        raise ValueError(f"{path} has no EMA weights but this run keeps an EMA (set train.ema null)")
    return spaces["ema"]


class ParallelState(LocalState):
    """A parallelized model with ParallelAdamW: every rank writes and reads its own slices."""

    def __init__(self, model, optimizer, groups):
        super().__init__(model, optimizer)
        self.groups, self.plan = groups, model.parallel_plan
        self.writes = groups.rank == 0
        self.tp, self.dp = groups.comm("tp"), groups.comm("dp")
        self.writes_shard = groups.cp_rank == 0  # CP ranks hold the same state
        self.infos = optimizer.infos
        self.names = [p.name for p in optimizer.parameters]

    def ema_targets(self):
        opt = self.optimizer
        if opt.slice_state:  # the ZeRO slices this rank updates: the EMA is sharded like them
            return list(opt.slices), self.names, opt.gather_slices
        return list(opt.parameters), self.names, None

    # ---- what this rank owns, as stored: the 1/dp flat slice of each TP piece --------------------------------------
    def _sliced(self, i):
        """Whether this rank's live state of parameter i is already its flat dp slice."""
        return self.optimizer.slice_state or self.infos[i].zero3

    def _stored(self, value, i):
        array = tensor_to_numpy(value).astype(np.float32)
        return array if self._sliced(i) else shard_flat(array, self.dp.index, self.dp.size)

    def _moments(self):
        """{parameter index: (moment 1, moment 2)} of the inner AdamW."""
        inner = self.optimizer.inner
        return {i: (inner.moments1[k], inner.moments2[k]) for k, i in enumerate(self.optimizer.inner_order)}

    def _weights(self):
        opt = self.optimizer
        return [opt.slices[i] if opt.slice_state else p for i, p in enumerate(opt.parameters)]

    def owned_tensors(self, ema):
        """{key: stored array} this rank writes."""
        tensors = {}
        moments = self._moments()
        for i, (name, weight) in enumerate(zip(self.names, self._weights())):
            tensors[f"model/{name}"] = self._stored(weight, i)
            tensors[f"optimizer/adam_m.{name}"] = self._stored(moments[i][0], i)
            tensors[f"optimizer/adam_v.{name}"] = self._stored(moments[i][1], i)
            if ema is not None:
                tensors[f"ema/{name}"] = self._stored(ema.shadows[i], i)
        if self.tp.index == 0 and self.dp.index == 0:
            tensors["optimizer/global_step"] = tensor_to_numpy(self.optimizer.global_step)
        return tensors

    def layouts(self, ema):
        layouts = {}
        for name, info in zip(self.names, self.infos):
            mode, parts = tensor_parallel_mode(name)  # whatever this run's tp: a later run may split it
            keys = [f"model/{name}", f"optimizer/adam_m.{name}", f"optimizer/adam_v.{name}"]
            for key in keys + ([f"ema/{name}"] if ema is not None else []):
                layouts[key] = TensorLayout(info.full_shape, mode, parts)
        layouts["optimizer/global_step"] = TensorLayout(tuple(self.optimizer.global_step.shape), split=False)
        return layouts

    def _barrier(self):
        self.groups.comm("world").all_reduce(ms.Tensor(np.ones(1, np.float32))).asnumpy()

    def save(self, manager, step, spaces, ema, metadata):
        if spaces:
            raise NotImplementedError(f"a parallel run cannot save the extra namespaces {sorted(spaces)}")
        partial = manager.partial_dir_for(step)
        if self.writes_shard:
            write_shard(partial, self.tp.index, self.dp.index, self.owned_tensors(ema))
        self._barrier()  # every shard is on disk before rank 0 commits
        path = None
        if self.writes:
            layout = {"dp": self.groups.dp, "tp": self.groups.tp, "cp": self.groups.cp, "sp": self.plan.sp,
                      "zero_stage": self.plan.zero_stage}
            manifest = build_manifest(partial, self.tp.size, self.dp.size, self.layouts(ema),
                                      {**metadata, "step": step}, layout)
            path = manager.commit_sharded(step, manifest)
        self._barrier()  # no rank starts the next step's save before the commit
        return path

    # ---- loading ---------------------------------------------------------------------------------------------------
    def load(self, path, ema):
        if not is_sharded_checkpoint(path):  # a single file (a one-process run's): every rank takes its pieces
            spaces, metadata = read_spaces(path)
            load_gathered_state_dict(self.model, spaces["model"], self.optimizer)
            load_gathered_optimizer_state(self.optimizer, spaces["optimizer"])
            if ema is not None:
                ema.load_state_dict(self._ema_pieces(_ema_space(spaces, path)), metadata["ema_updates"])
            return spaces, metadata
        checkpoint = ShardedCheckpoint(path)
        same = checkpoint.tp == self.tp.size and checkpoint.dp == self.dp.size
        _logger.info("loading %s (%s layout)", path, "same" if same else "another")
        if ema is not None and not any(key.startswith("ema/") for key in checkpoint.keys()):
            raise ValueError(f"{path} has no EMA weights but this run keeps an EMA (set train.ema null)")
        given = {key: checkpoint.layout(key).full_shape for key in checkpoint.keys()
                 if ema is not None or not key.startswith("ema/")}
        check_names({key: layout.full_shape for key, layout in self.layouts(ema).items()}, given,
                    f"{path} does not fit this run")
        moments, weights = self._moments(), self._weights()
        for i, name in enumerate(self.names):  # one piece in memory at a time
            targets = {f"model/{name}": weights[i], f"optimizer/adam_m.{name}": moments[i][0],
                       f"optimizer/adam_v.{name}": moments[i][1]}
            if ema is not None:
                targets[f"ema/{name}"] = ema.shadows[i]
            for key, target in targets.items():
                copy_into(target, self._read(checkpoint, key, i, same).reshape(target.shape))
        copy_into(self.optimizer.global_step, checkpoint.read_full("optimizer/global_step"))
        if self.optimizer.slice_state:
            self.optimizer.gather_slices()
        if ema is not None:
            ema.num_updates = int(checkpoint.metadata["ema_updates"])
        return {}, checkpoint.metadata

    def _read(self, checkpoint, key, i, same):
        """This rank's live piece of `key`: under the same layout its own stored slice (gathered over dp when the
        live state is not sliced), under another layout read straight from the pieces that overlap it."""
        if same:
            own = checkpoint.read(key, Piece(self.tp.index, self.tp.size, self.dp.index, self.dp.size, flat=True))
            if self._sliced(i):
                return own
            rows = tensor_to_numpy(self.dp.all_gather(ms.Tensor(own[None]), 0))
            shape = self.infos[i].local_shape
            return rows.reshape(-1)[:int(np.prod(shape))].reshape(shape)
        return checkpoint.read(key, Piece(self.tp.index, self.tp.size, self.dp.index, self.dp.size,
                                          flat=self._sliced(i)))

    def _ema_pieces(self, tensors):
        """EMA shadows from single-process arrays: this rank's pieces, as slices when the EMA tracks slices."""
        pieces = local_arrays(self.model, tensors)
        if not self.optimizer.slice_state:
            return pieces
        return {name: (piece if self.infos[i].zero3 else shard_flat(piece, self.dp.index, self.dp.size))
                for i, (name, piece) in enumerate((n, pieces[n]) for n in self.names)}

