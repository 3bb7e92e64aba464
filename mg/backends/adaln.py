"""adaLN modulation and gated residuals of tokens (B, N, D) by per-sample vectors (B, 1, D), with closed-form
backwards whose sums over tokens are ones-row matmuls (CPU ReduceSum over a middle axis is slow); the operands are
tiled, not broadcast (mg/backends/tensors.py). The same on every device."""
from mindspore import nn

from mg.backends.dense import row_sums
from mg.backends.tensors import expand


class _Modulate(nn.Cell):
    def construct(self, x, shift, scale):
        return x * expand(1 + scale, x.shape) + expand(shift, x.shape)

    def bprop(self, x, shift, scale, out, dout):
        return dout * expand(1 + scale, x.shape), row_sums(dout), row_sums(dout * x)


class _GatedAdd(nn.Cell):
    def construct(self, x, gate, y):
        return x + expand(gate, y.shape) * y

    def bprop(self, x, gate, y, out, dout):
        return dout, row_sums(dout * y), dout * expand(gate, y.shape)


_MODULATE = _Modulate()
_GATED_ADD = _GatedAdd()


def modulate(x, shift, scale):
    """x * (1 + scale) + shift."""
    return _MODULATE(x, shift, scale)


def gated_add(x, gate, y):
    """x + gate * y."""
    return _GATED_ADD(x, gate, y)
