"""Dense layers: x W^T + b, fused on Ascend (mint's linear), with hand-written backwards elsewhere.

The plain path's weight gradient dy^T x is one transposed-operand matmul instead of Transpose + MatMul (autodiff of a
dense layer materialises the transposes: ~18% of a 1B block's kernel time at 256 tokens) and the bias gradient is a
ones-row matmul (CPU ReduceSum over leading axes is slow). Besides token rows, the plain path has two layouts for
attention's projections, chosen so that no transpose of the heads is ever needed (mg/backends/mha.py):
TO_FEATURE_MAJOR writes w x^T, the features before the tokens; FROM_FEATURE_MAJOR reads such an input as a
transposed operand.
"""
from mindspore import mint, nn, ops

from mg.backends.device import fused
from mg.backends.tensors import expand

MM = ops.MatMul()
MM_NT = ops.MatMul(transpose_b=True)  # a @ b^T
MM_TN = ops.MatMul(transpose_a=True)  # a^T @ b
BMM = ops.BatchMatMul()
BMM_NT = ops.BatchMatMul(transpose_b=True)
BMM_TN = ops.BatchMatMul(transpose_a=True)
BMM_TT = ops.BatchMatMul(transpose_a=True, transpose_b=True)

# the layouts of `linear`
ROWS = "rows"                              # x (..., I) -> (..., O)
TO_FEATURE_MAJOR = "to_feature_major"      # x (B, N, I) -> (B, O, N), plain path only
FROM_FEATURE_MAJOR = "from_feature_major"  # x (B, I, N) -> (B, N, O), plain path only


def row_sums(x):
    """(B, N, D) -> (B, 1, D) sums over axis 1 as a ones-row batched matmul (CPU ReduceSum over axis 1 is slow)."""
    return BMM(mint.ones((x.shape[0], 1, x.shape[1]), dtype=x.dtype), x)


class _Rows(nn.Cell):
    """x (M, I) @ w (O, I)^T; dx = dy @ w and dw = dy^T @ x as transposed-operand matmuls."""

    def construct(self, x, w):
        return MM_NT(x, w)

    def bprop(self, x, w, out, dout):
        return MM(dout, w), MM_TN(dout, x)


def _per_sample(w, batch):
    return ops.broadcast_to(w, (batch, *w.shape))


def _sum_samples(g):
    """(B, O, I) -> (O, I) as a ones-row matmul."""
    return MM(mint.ones((1, g.shape[0]), dtype=g.dtype), g.reshape(g.shape[0], -1)).reshape(g.shape[1:])


class _ToFeatureMajor(nn.Cell):
    """x (B, N, I), w (O, I) -> w x^T (B, O, N)."""

    def construct(self, x, w):
        return BMM_NT(_per_sample(w, x.shape[0]), x)

    def bprop(self, x, w, out, dout):
        return BMM_TN(dout, _per_sample(w, x.shape[0])), _sum_samples(BMM(dout, x))


class _FromFeatureMajor(nn.Cell):
    """xf (B, I, N), w (O, I) -> xf^T w^T (B, N, O)."""

    def construct(self, xf, w):
        return BMM_TT(xf, _per_sample(w, xf.shape[0]))

    def bprop(self, xf, w, out, dout):
        return BMM_TT(_per_sample(w, xf.shape[0]), dout), _sum_samples(BMM_TT(dout, xf))


class _RowBias(nn.Cell):
    """x (M, O) + b (O,) with db = ones(1, M) @ dy."""

    def construct(self, x, b):
        return x + expand(b, x.shape)

    def bprop(self, x, b, out, dout):
        return dout, MM(mint.ones((1, dout.shape[0]), dtype=dout.dtype), dout).reshape(b.shape)


_ROWS = _Rows()
_TO_FEATURE_MAJOR = _ToFeatureMajor()
_FROM_FEATURE_MAJOR = _FromFeatureMajor()
_ROW_BIAS = _RowBias()


def add_bias(rows, bias):
    """rows (M, O) + bias (O,), the bias gradient a ones-row matmul."""
    return _ROW_BIAS(rows, bias)


def linear(x, weight, bias=None, layout=ROWS):
    """x @ weight (O, I)^T + bias (O,) in the dtypes given; `layout` says where x's and the output's features are."""
    if layout == ROWS:
        if fused():
            return mint.nn.functional.linear(x, weight, bias)
        out = _ROWS(x.reshape(-1, x.shape[-1]), weight)
        if bias is not None:
            out = add_bias(out, bias)
        return out.reshape(*x.shape[:-1], weight.shape[0])
    if layout == TO_FEATURE_MAJOR:
        out = _TO_FEATURE_MAJOR(x, weight)
        return out if bias is None else out + expand(bias.reshape(-1, 1), out.shape)
    out = _FROM_FEATURE_MAJOR(x, weight)
    return out if bias is None else out + expand(bias, out.shape)

