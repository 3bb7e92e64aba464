"""The one place where processes communicate: group collectives, differentiable collective Cells, a byte meter.

`GroupComm` runs all-reduce / all-gather / reduce-scatter on one process group with the native op where the device
has it (Ascend: every op on every group) and an exact equivalent where it does not. MindSpore 2.10 on CPU has only
AllReduce on sub-groups and AllGather on the world group, no ReduceScatter, so there:

    all-gather on a sub-group = each rank writes its part into zeros, then an all-reduce (sum)
    reduce-scatter            = all-reduce, then each rank keeps its part

The Cells below pair a forward collective with the backward that makes the gradient exact (gradients cannot flow
through MindSpore's own AllGather on CPU, its backward is a ReduceScatter). Which pair to use depends on whether the
values around the op are replicated on the group or partial sums:

    SumAcross        fwd all-reduce       bwd identity        partial sums -> replicated (row-parallel output)
    CopyAcross       fwd identity         bwd all-reduce      replicated input used by rank-local work
    GatherSharded    fwd all-gather       bwd reduce-scatter  sequence shards -> full sequence for local work
    ScatterSum       fwd reduce-scatter   bwd all-gather      partial sums -> sequence shards (SP row output)
    SplitReplicated  fwd keep own part    bwd all-gather      replicated -> sequence shards
    GatherReplicated fwd all-gather       bwd keep own part   sequence shards -> replicated

`METER` counts what every collective would move with the native op (PyNative only; jitted code is not counted).
"""
from __future__ import annotations

from collections import defaultdict

import mindspore as ms
from mindspore import mint, nn, ops

from mg.backends import fused_on

# ----------------------------------------------------------------------------------------------------------------------
# Byte meter
# ----------------------------------------------------------------------------------------------------------------------
class CommMeter:
    """Counts calls and bytes per collective kind while enabled.

    `bytes` is the size of the collective's full tensor (all-reduce: the input; all-gather: the output;
    reduce-scatter: the input). `wire_bytes` is what one rank sends with a ring algorithm:
    all-reduce 2 (p-1)/p n, all-gather and reduce-scatter (p-1)/p n.
    """

    def __init__(self):
        self.enabled = False
        self.reset()

    def reset(self):
        self.calls = defaultdict(int)
        self.bytes = defaultdict(int)
        self.wire_bytes = defaultdict(float)

    def record(self, kind, group_size, nbytes):
        if not self.enabled or group_size == 1:
            return
        factor = 2.0 if kind == "all_reduce" else 1.0
        self.calls[kind] += 1
        self.bytes[kind] += nbytes
        self.wire_bytes[kind] += factor * (group_size - 1) / group_size * nbytes

    def summary(self):
        return {kind: {"calls": self.calls[kind], "bytes": self.bytes[kind], "wire_bytes": self.wire_bytes[kind]}
                for kind in sorted(self.calls)}


METER = CommMeter()


# ----------------------------------------------------------------------------------------------------------------------
# Raw collectives on one group
# ----------------------------------------------------------------------------------------------------------------------
class GroupComm(nn.Cell):
    """Collectives on one process group. `index` is this process's position in the group's rank list."""

    def __init__(self, name, ranks, index, is_world, native):
        super().__init__()
        self.name, self.ranks, self.index, self.size = name, tuple(ranks), index, len(ranks)
        self.native = native
        if self.size > 1:
            self.all_reduce_op = ops.AllReduce(group=name)
            if native or is_world:
                self.all_gather_op = ops.AllGather(group=name)
            if native:
                self.reduce_scatter_op = ops.ReduceScatter(group=name)
        self.use_gather_op = self.size > 1 and (native or is_world)

    @staticmethod
    def create(name, ranks, rank, world):
        """The group of `ranks` seen from `rank` (creates the MindSpore group if it has several ranks)."""
        native = fused_on(ms.get_context("device_target"))  # the devices with fused kernels have every op
        if len(ranks) == 1:
            return GroupComm(name, ranks, 0, world == 1, native)
        from mindspore.communication import GlobalComm, create_group
        is_world = len(ranks) == world
        if is_world:
            name = GlobalComm.WORLD_COMM_GROUP
        else:
            create_group(name, list(ranks))
        return GroupComm(name, ranks, ranks.index(rank), is_world, native)

    def _chunk(self, length, axis):
        if length % self.size:
            raise ValueError(f"axis {axis} of length {length} cannot be split evenly over the {self.size} ranks of "
                             f"process group {self.name}")
        return length // self.size

    def all_reduce(self, x):
        METER.record("all_reduce", self.size, x.nbytes)
        if self.size == 1:
            return x
        return self.all_reduce_op(x)

    def all_gather(self, x, axis=0):
        """Concatenate every rank's `x` along `axis` in group order."""
        METER.record("all_gather", self.size, x.nbytes * self.size)
        if self.size == 1:
            return x
        if self.use_gather_op:
            stacked = self.all_gather_op(x)  # along axis 0
            if axis == 0:
                return stacked
            return mint.cat(mint.chunk(stacked, self.size, dim=0), dim=axis)
        parts = []
        if self.index > 0:
            parts.append(mint.zeros(_resized(x.shape, axis, self.index), dtype=x.dtype))
        parts.append(x)
        if self.index < self.size - 1:
            parts.append(mint.zeros(_resized(x.shape, axis, self.size - 1 - self.index), dtype=x.dtype))
        return self.all_reduce_op(mint.cat(parts, dim=axis))

    def reduce_scatter(self, x, axis=0):
        """Sum over ranks, then keep this rank's part of `axis`."""
        METER.record("reduce_scatter", self.size, x.nbytes)
        if self.size == 1:
            return x
        chunk = self._chunk(x.shape[axis], axis)
        if self.native:
            if axis != 0:  # the op scatters axis 0: bring this axis's parts there
                x = mint.cat(mint.chunk(x, self.size, dim=axis), dim=0)
            return self.reduce_scatter_op(x)
        return mint.narrow(self.all_reduce_op(x), axis, self.index * chunk, chunk)

    def split(self, x, axis=0):
        """This rank's part of `axis` (no communication)."""
        if self.size == 1:
            return x
        chunk = self._chunk(x.shape[axis], axis)
        return mint.narrow(x, axis, self.index * chunk, chunk)


def _resized(shape, axis, factor):
    shape = list(shape)
    shape[axis] *= factor
    return tuple(shape)


# ----------------------------------------------------------------------------------------------------------------------
# Differentiable collectives (a Cell with a custom bprop each)
# ----------------------------------------------------------------------------------------------------------------------
class _Collective(nn.Cell):
    def __init__(self, comm: GroupComm, axis: int = 0):
        super().__init__()
        self.comm = comm
        self.axis = axis


class SumAcross(_Collective):
    def construct(self, x):
        return self.comm.all_reduce(x)

    def bprop(self, x, out, dout):
        return (dout,)


class CopyAcross(_Collective):
    def construct(self, x):
        return x

    def bprop(self, x, out, dout):
        return (self.comm.all_reduce(dout),)


class GatherSharded(_Collective):
    def construct(self, x):
        return self.comm.all_gather(x, self.axis)

    def bprop(self, x, out, dout):
        return (self.comm.reduce_scatter(dout, self.axis),)


class ScatterSum(_Collective):
    def construct(self, x):
        return self.comm.reduce_scatter(x, self.axis)

    def bprop(self, x, out, dout):
        return (self.comm.all_gather(dout, self.axis),)


class SplitReplicated(_Collective):
    def construct(self, x):
        return self.comm.split(x, self.axis)

    def bprop(self, x, out, dout):
        return (self.comm.all_gather(dout, self.axis),)


class GatherReplicated(_Collective):
    def construct(self, x):
        return self.comm.all_gather(x, self.axis)

    def bprop(self, x, out, dout):
        return (self.comm.split(dout, self.axis),)
