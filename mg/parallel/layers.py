"""Parallel versions of the transformer's layers, built from a single-process layer whose weights they take.

`ParallelLinear` is column-parallel (output features sharded: a fused weight such as [q | k | v] shards each part
separately, so rank r holds [q_r | k_r | v_r] and the usual chunk/split-heads code sees its own heads), row-parallel
(input features sharded, partial outputs summed) or not tensor-parallel at all; with sequence parallelism the
column layer all-gathers the sequence first and the row layer reduce-scatters it after. With ZeRO-3 the weight is
kept as this rank's flat 1/dp slice and all-gathered when used (its gradient is reduce-scattered back).

`ContextParallelSelfAttention` all-gathers K and V (not Q) over the CP group; `SequenceShardedBlock` moves a
transformer block onto the sequence shard of its rank: the first block splits the tokens, the last gathers them.
"""
from __future__ import annotations

import math

import numpy as np
from mindspore import nn

from mg.backends import FROM_FEATURE_MAJOR, ROWS, TO_FEATURE_MAJOR, linear, token_axis
from mg.parallel.deferred import piece_parameter
from mg.parallel.collectives import (CopyAcross, GatherReplicated, GatherSharded, ScatterSum, SplitReplicated,
                                     SumAcross)

TP_MODES = (None, "column", "row")


def shard_tp(full, mode, parts, index, size):
    """This TP rank's piece of a full weight (out, in) or bias (out,): column shards each of the `parts` equal
    blocks of axis 0, row shards axis 1."""
    if mode is None or size == 1:
        return full
    if mode == "row":
        return np.split(full, size, axis=1)[index] if full.ndim == 2 else full
    return np.concatenate([np.split(part, size, axis=0)[index] for part in np.split(full, parts, axis=0)], axis=0)


def unshard_tp(pieces, mode, parts):
    """Inverse of `shard_tp`: the full array from every TP rank's piece (in rank order)."""
    if mode is None or len(pieces) == 1:
        return pieces[0]
    if mode == "row":
        return np.concatenate(pieces, axis=1) if pieces[0].ndim == 2 else pieces[0]
    split = [np.split(piece, parts, axis=0) for piece in pieces]
    return np.concatenate([np.concatenate([s[p] for s in split], axis=0) for p in range(parts)], axis=0)


def shard_shape(full_shape, mode, size):
    """The shape of a TP rank's piece (`shard_tp`) of an array of `full_shape`."""
    if mode == "column":
        return (full_shape[0] // size, *full_shape[1:])
    if mode == "row" and len(full_shape) == 2:
        return (full_shape[0], full_shape[1] // size)
    return tuple(full_shape)


def flat_shard_length(numel, size):
    return math.ceil(numel / size)


def shard_flat(array, index, size):
    """This rank's slice of the flattened, zero-padded `array` (ZeRO)."""
    length = flat_shard_length(array.size, size)
    flat = np.zeros(length * size, dtype=array.dtype)
    flat[:array.size] = array.reshape(-1)
    return flat[index * length:(index + 1) * length]


class ZeroGather(nn.Cell):
    """ZeRO-3: the full weight from every rank's flat slice (all-gather); the gradient is summed over the group and
    scattered back (reduce-scatter)."""

    def __init__(self, comm, shape):
        super().__init__()
        self.gather = GatherSharded(comm, 0)
        self.shape = tuple(shape)
        self.numel = int(np.prod(shape))

    def construct(self, flat):
        return self.gather(flat)[:self.numel].reshape(self.shape)


class ParallelLinear(nn.Cell):
    """y = x W^T + b with W sharded for tensor parallelism (and ZeRO-3); computes in the input's dtype.

    Args:
        linear: the single-process `Linear` whose weights are taken (and sliced).
        mode: None, "column" or "row".
        parts: number of fused equal parts of the output features (3 for qkv, 2 for kv and w13).
        tp_comm: the TP group. sp: sequence-parallel input (column) / output (row) on axis 1.
        zero_comm: the group a ZeRO-3 weight is sliced over (None: keep the weight whole).
    """

    def __init__(self, linear, mode=None, parts=1, tp_comm=None, sp=False, zero_comm=None):
        super().__init__()
        if mode not in TP_MODES:
            raise ValueError(f"mode must be one of {TP_MODES}, got {mode!r}")
        tp = 1 if tp_comm is None else tp_comm.size
        out_features, in_features = linear.weight.shape
        if mode == "column" and out_features % (parts * tp):
            raise ValueError(f"column-parallel linear: {out_features} output features in {parts} parts cannot be "
                             f"split over tp={tp}")
        if mode == "row" and in_features % tp:
            raise ValueError(f"row-parallel linear: {in_features} input features cannot be split over tp={tp}")
        self.mode, self.parts = (mode if tp > 1 else None), parts
        self.full_shape = (out_features, in_features)
        index = 0 if tp_comm is None else tp_comm.index
        self.local_shape = shard_shape(self.full_shape, self.mode, tp)
        self.zero = zero_comm is not None and zero_comm.size > 1
        zero_index, zero_size = (zero_comm.index, zero_comm.size) if self.zero else (0, 1)
        if self.zero:
            self.zero_gather = ZeroGather(zero_comm, self.local_shape)
        weight_shape = (flat_shard_length(int(np.prod(self.local_shape)), zero_size),) if self.zero else \
            self.local_shape

        def cut_weight(full):
            piece = shard_tp(full, self.mode, parts, index, tp)
            return shard_flat(piece, zero_index, zero_size) if self.zero else piece

        self.weight = piece_parameter(linear.weight, cut_weight, weight_shape, "weight")
        self.bias = None
        if linear.bias is not None:
            bias_mode = self.mode if self.mode == "column" else None
            self.bias = piece_parameter(linear.bias, lambda full: shard_tp(full, bias_mode, parts, index, tp),
                                        shard_shape((out_features,), bias_mode, tp), "bias")
        self.enter, self.leave = None, None
        if self.mode == "column":
            self.enter = GatherSharded(tp_comm, 1) if sp else CopyAcross(tp_comm)
        elif self.mode == "row":
            self.leave = ScatterSum(tp_comm, 1) if sp else SumAcross(tp_comm)

    def construct(self, x):
        return self.apply(x, self.weight, self.bias)

    def apply(self, x, weight, bias=None, layout=ROWS):
        """`weight` is this rank's piece (its flat ZeRO-3 slice when sliced), like the `weight` Parameter;
        `layout` as in kernels.dense. The collectives act on token rows: a column layer's input and a row layer's
        output are rows whatever the layout."""
        if (self.enter is not None and layout == FROM_FEATURE_MAJOR) or (
                self.leave is not None and layout == TO_FEATURE_MAJOR):
            raise ValueError(f"a {self.mode}-parallel linear cannot take layout {layout!r}")
        weight = self.zero_gather(weight) if self.zero else weight
        if self.enter is not None:
            x = self.enter(x)
        y = linear(x, weight.astype(x.dtype), None, layout)
        if self.leave is not None:
            y = self.leave(y)
        if bias is not None:
            y = y + (bias.reshape(-1, 1) if layout == TO_FEATURE_MAJOR else bias).astype(x.dtype)
        return y


class ContextParallelSelfAttention(nn.Cell):
    """Self-attention over a CP shard of the tokens: local queries attend to K and V gathered from the CP group.

    Wraps a `SelfAttention` (its projections keep their parameter names: parallelize drops `.inner.`)."""

    def __init__(self, attn, cp_comm):
        super().__init__()
        self.inner = attn
        self.gather_k = GatherSharded(cp_comm, token_axis())
        self.gather_v = GatherSharded(cp_comm, token_axis())

    def construct(self, x):
        return self.apply(x, *self.weights())[0]

    def weights(self):
        return self.inner.weights()

    def apply(self, x, qkv_weight, proj_weight, saved=None):
        q, k, v = self.inner.heads(x, qkv_weight)
        return self.inner.attend(q, self.gather_k(k), self.gather_v(v), proj_weight, saved)


class SequenceShardedBlock(nn.Cell):
    """Runs `block` on this rank's share of the tokens (axis 1 split over `seq_comm`).

    The first block splits the (replicated) tokens, the last gathers them back; the positional table is split for
    every block. The timestep modulation and the text context are replicated inputs used by rank-local work, so their
    gradients are summed over the ranks that used them (`modulation_comm`: every rank holding a shard of the tokens;
    `context_comm`: the CP group, since TP's column-parallel kv already sums over TP)."""

    def __init__(self, block, seq_comm, modulation_comm, context_comm, first, last):
        super().__init__()
        self.inner = block
        self.split_tokens = SplitReplicated(seq_comm, 1) if first else None
        self.split_pos = SplitReplicated(seq_comm, 1)
        self.gather_tokens = GatherReplicated(seq_comm, 1) if last else None
        self.enter_modulation = CopyAcross(modulation_comm)
        self.enter_context = CopyAcross(context_comm)

    def construct(self, x, pos, modulation, context, context_mask):
        if self.split_tokens is not None:
            x = self.split_tokens(x)
        x = self.inner(x, self.split_pos(pos), self.enter_modulation(modulation), self.enter_context(context),
                       context_mask)
        if self.gather_tokens is not None:
            x = self.gather_tokens(x)
        return x
