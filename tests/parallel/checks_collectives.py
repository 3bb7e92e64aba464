"""Collective checks run inside msrun workers: every differentiable collective, forward and gradient, against NumPy,
on the world group and on sub-groups (PyNative, and one pass under ms.jit)."""
import mindspore as ms
import numpy as np

from mg.parallel import collectives as C


def _inputs(size, shape, salt):
    """One array per rank of the group, the same on every rank (inputs, or weights of the output in the loss)."""
    return [np.random.default_rng([salt, r]).standard_normal(shape).astype(np.float32) for r in range(size)]


def _expected(kind, xs, ws, index, axis):
    size = len(xs)

    def chunk(a, i):
        return np.split(a, size, axis=axis)[i]

    if kind == "SumAcross":
        return sum(xs), ws[index]
    if kind == "CopyAcross":
        return xs[index], sum(ws)
    if kind == "GatherSharded":
        return np.concatenate(xs, axis=axis), chunk(sum(ws), index)
    if kind == "ScatterSum":
        return chunk(sum(xs), index), np.concatenate(ws, axis=axis)
    if kind == "SplitReplicated":
        return chunk(xs[index], index), np.concatenate(ws, axis=axis)
    if kind == "GatherReplicated":
        return np.concatenate(xs, axis=axis), chunk(ws[index], index)
    raise KeyError(kind)


def _output_shape(kind, shape, axis, size):
    shape = list(shape)
    if kind in ("GatherSharded", "GatherReplicated"):
        shape[axis] *= size
    elif kind in ("ScatterSum", "SplitReplicated"):
        shape[axis] //= size
    return shape


ALL_OPS = ("SumAcross", "CopyAcross", "GatherSharded", "ScatterSum", "SplitReplicated", "GatherReplicated")


def check_collectives(groups, prefix, kinds=("tp", "cp", "dp", "seq", "dp_cp", "world"), op_names=ALL_OPS,
                      axes=(0, 1), jit=False):
    """{check name: max abs error} for the collective Cells on the distinct groups of `groups` among `kinds`."""
    results, seen = {}, set()
    for kind_name in kinds:
        comm = groups.comm(kind_name)
        if comm.size == 1 or comm.ranks in seen:
            continue
        seen.add(comm.ranks)
        for op_name in op_names:
            for axis in axes:
                shape = [2, 3]
                shape[axis] *= comm.size  # divisible for the ops that split
                if op_name in ("GatherSharded", "GatherReplicated"):
                    shape = [2, 3]
                salt = len(results)
                xs = _inputs(comm.size, shape, salt)
                ws = _inputs(comm.size, _output_shape(op_name, shape, axis, comm.size), salt + 1)
                out_ref, grad_ref = _expected(op_name, xs, ws, comm.index, axis)
                cell = getattr(C, op_name)(comm, axis)
                w = ms.Tensor(ws[comm.index])

                def loss(x):
                    return (cell(x) * w).sum()

                x = ms.Tensor(xs[comm.index])
                forward = ms.jit(cell) if jit else cell
                grad_fn = ms.jit(ms.grad(loss)) if jit else ms.grad(loss)
                out = forward(x).asnumpy()
                grad = grad_fn(x).asnumpy()
                err = max(float(np.abs(out - out_ref).max()), float(np.abs(grad - grad_ref).max()))
                results[f"{prefix}/{kind_name}/{op_name}/axis{axis}{'/jit' if jit else ''}"] = err
    return results
