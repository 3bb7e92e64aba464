"""Shape helpers that write their output instead of broadcasting or returning strided views.

- `expand(t, shape)`: an operand repeated to the full shape before an elementwise op. Under ms.jit on CPU a binary op
  that broadcasts one operand keeps ~4x its output's size alive until the graph ends, while Tile frees as it goes
  and Tile + Mul is faster than the broadcasting Mul (docs/performance.md). `expand_summed_by_matmul` repeats one
  axis by an outer product with ones, so that autodiff's gradient, the sum over that axis, is a matmul: CPU
  ReduceSum (Tile's gradient) is 4-5x slower.
- `permute`, `split_equal`: Transpose and Split kernels in place of mint's view ops (transpose, permute, chunk),
  which under ms.jit on CPU are made contiguous by a generic element-by-element copy (a third of the toy model's
  compiled train step before; docs/performance.md).
- `narrow`: a slice along one axis that is skipped when it keeps the whole axis. Under ms.jit on CPU the StridedSlice
  kernel is fast only when exactly one axis is cut: a slice that keeps everything, or cuts two axes, copies element by
  element (150 ms for 8M floats against 3-5 ms; docs/performance.md).
"""
import numpy as np
import mindspore as ms
from mindspore import ops

# primitive instances: ops' functional forms create one inside the graph, which fails in a bprop under jit
_MM, _BMM, _TILE = ops.MatMul(), ops.BatchMatMul(), ops.Tile()


@ms.constexpr
def _tile_multiples(shape, small):
    """How often Tile repeats each axis of a `small` shape to make `shape` (NumPy broadcasting rules)."""
    small = (1,) * (len(shape) - len(small)) + tuple(small)
    return tuple(size // part for size, part in zip(shape, small))


def expand(t, shape):
    """t repeated to `shape` (NumPy broadcasting rules). It always tiles, even when t already has the shape: a
    branch here breaks the compile of a recomputed block under jit when a custom bprop calls it
    (mg/backends/recompute.py)."""
    return _TILE(t, _tile_multiples(shape, t.shape))


@ms.constexpr
def _ones(shape):
    """A constant of ones (mint.ones inside a recomputed block's gradient broke its compile under jit)."""
    return ms.Tensor(np.ones(shape, np.float32))


@ms.constexpr
def _outer_product(shape, small):
    """How `expand_summed_by_matmul` makes `shape` from `small`, which differs from it in one axis at most: (the
    repeated axis is the last, rows before it, repeats, elements after it)."""
    small = (1,) * (len(shape) - len(small)) + tuple(small)
    axes = [axis for axis, (size, part) in enumerate(zip(shape, small)) if size != part]
    if len(axes) > 1:
        raise ValueError(f"expand_summed_by_matmul repeats one axis: {small} -> {shape}")
    if not axes:  # nothing to repeat: a product with a single 1
        return True, int(np.prod(small)), 1, 1
    axis = axes[0]
    rows, after = int(np.prod(small[:axis])), int(np.prod(small[axis + 1:]))
    return after == 1, rows, shape[axis], after


def expand_summed_by_matmul(t, shape):
    """`expand` for one repeated axis, as an outer product with ones, so that autodiff's gradient (the sum over the
    repeated axis) is a matmul, not CPU ReduceSum (Tile's gradient, 4-5x slower). Not for custom bprops: its branch
    breaks their compile in a recomputed block."""
    last, rows, count, after = _outer_product(shape, t.shape)
    if last:
        return _MM(t.reshape(rows, 1), _ones((1, count)).astype(t.dtype)).reshape(shape)
    return _BMM(_ones((rows, count, 1)).astype(t.dtype), t.reshape(rows, 1, after)).reshape(shape)


def permute(x, axes):
    """x with its axes reordered (numpy.transpose's `axes`)."""
    return ops.transpose(x, tuple(axes))


def split_equal(x, parts, axis=-1):
    """`parts` equal pieces of x along `axis`."""
    return ops.split(x, x.shape[axis] // parts, axis=axis)


def narrow(x, axis, start, stop):
    """x[start:stop] along `axis` (stop may be None: to the end); x itself when that is the whole axis."""
    size = x.shape[axis]
    stop = size if stop is None else stop
    if start == 0 and stop == size:
        return x
    axis = axis % len(x.shape)
    return x[(slice(None),) * axis + (slice(start, stop),)]
