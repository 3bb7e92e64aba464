"""`expand(t, shape)`: an operand repeated to the full shape before an elementwise op, in place of broadcasting.

Under ms.jit on CPU a binary op that broadcasts one operand keeps ~4x its output's size alive until the graph ends
(16 chained x * s on x (1, 4096, 256): 269 MiB with s (1, 1, 256), 15 MiB with s the full size; a (1, 1, 1, L) bias
on (1, 4, 1024, L) attention scores: 1037 vs 24 MiB). Tile frees as it goes, and Tile + Mul is faster than the
broadcasting Mul (0.7 vs 1.1 ms on (4096, 256)). The transformer's and the TAE's CPU kernels use it.
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
    branch here breaks the compile of a recomputed block under jit (mg/models/dit/checkpoint.py)."""
    return _TILE(t, _tile_multiples(shape, t.shape))
