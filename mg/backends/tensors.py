"""Shape helpers that write their output instead of broadcasting or returning strided views.

- `expand(t, shape)`: an operand repeated to the full shape before an elementwise op. Under ms.jit on CPU a binary op
  that broadcasts one operand keeps ~4x its output's size alive until the graph ends, while Tile frees as it goes
  and Tile + Mul is faster than the broadcasting Mul (docs/performance.md).
- `permute`, `split_equal`: Transpose and Split kernels in place of mint's view ops (transpose, permute, chunk),
  which under ms.jit on CPU are made contiguous by a generic element-by-element copy (a third of the toy model's
  compiled train step before; docs/performance.md).
"""
import mindspore as ms
from mindspore import ops

_TILE = ops.Tile()  # a primitive instance: ops.tile creates one inside the graph, which fails in a bprop under jit


@ms.constexpr
def _tile_multiples(shape, small):
    """How often Tile repeats each axis of a `small` shape to make `shape` (NumPy broadcasting rules)."""
    small = (1,) * (len(shape) - len(small)) + tuple(small)
    return tuple(size // part for size, part in zip(shape, small))


def expand(t, shape):
    """t repeated to `shape` (NumPy broadcasting rules). It always tiles, even when t already has the shape: a
    branch here breaks the compile of a recomputed block under jit (mg/backends/recompute.py)."""
    return _TILE(t, _tile_multiples(shape, t.shape))


def permute(x, axes):
    """x with its axes reordered (numpy.transpose's `axes`)."""
    return ops.transpose(x, tuple(axes))


def split_equal(x, parts, axis=-1):
    """`parts` equal pieces of x along `axis`."""
    return ops.split(x, x.shape[axis] // parts, axis=axis)
