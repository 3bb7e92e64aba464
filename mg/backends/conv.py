"""3-D convolutions of channels-last tensors (B, T, H, W, C) with the standard weight layout (out, in, kt, kh, kw):
MindSpore's fused conv3d on Ascend; elsewhere one gather + one matmul.

MindSpore's CPU kernels for k>1 convolutions run at ~1 GFLOP/s and every CPU kernel is memory-bound, so the plain
path computes a convolution as one gather and one matmul: an index map (built once per shape with NumPy) lists, for
each output position and kernel tap, the input row it reads; padding points at an appended zero row (zero padding)
or at the clamped edge row (replicate padding), and a nearest-neighbour upsampling of the input is folded into the
same map. The backward is another gather + matmul through the inverse map (a custom bprop), which avoids the K
full-size zero-filled gradients that autodiff of K shifted slices produces. 1x1 convolutions are dense layers
(mg/backends/dense.py).
"""
from functools import lru_cache

import numpy as np
from mindspore import Tensor, mint, nn, ops

from mg.backends.device import fused
from mg.backends.dense import MM_TN, add_bias, linear
from mg.backends.tensors import permute


class ConvGeometry:
    """Kernel, stride, per-side padding (t0, t1, h0, h1, w0, w1), padding mode per axis and input upsampling."""

    def __init__(self, kernel, stride=(1, 1, 1), padding=(0,) * 6, replicate=(False, False, False),
                 upsample=(1, 1, 1)):
        self.kernel, self.stride, self.padding = tuple(kernel), tuple(stride), tuple(padding)
        self.replicate, self.upsample = tuple(replicate), tuple(upsample)

    def output_shape(self, grid):
        """(T, H, W) of the output for an input grid (T, H, W)."""
        return tuple((n * u + self.padding[2 * a] + self.padding[2 * a + 1] - k) // s + 1
                     for a, (n, u, k, s) in enumerate(zip(grid, self.upsample, self.kernel, self.stride)))

    def key(self):
        return self.kernel, self.stride, self.padding, self.replicate, self.upsample


@lru_cache(maxsize=256)
def _gather_index(grid, geometry_key):
    """The index map of a convolution on one sample's positions (T*H*W rows, row-major).

    Returns (rows, readers, out): rows (No * K,), the input row of each (output position, tap), P (the appended zero
    row) where zero padding is read; readers (P * K * M,), the output rows that read each (input row, tap), No (a
    zero row of the output gradient) in unused slots, M the most readers of one (input row, tap); out, the output
    grid.
    """
    kernel, stride, padding, replicate, upsample = geometry_key
    out = ConvGeometry(*geometry_key).output_shape(grid)
    if min(out) < 1:
        raise ValueError(f"convolution with kernel {kernel}, stride {stride}, padding {padding} does not fit input "
                         f"grid {grid} (upsampled by {upsample})")
    coords, valid = [], np.ones(1, bool)
    for a in range(3):
        o = np.arange(out[a])[:, None] * stride[a] + np.arange(kernel[a])[None, :] - padding[2 * a]
        size = grid[a] * upsample[a]
        if replicate[a]:
            o = np.clip(o, 0, size - 1)
        inside = (o >= 0) & (o < size)
        coords.append(np.where(inside, o, 0) // upsample[a])
        valid = valid[..., None, None] & inside if a else inside
    # (To, kt) x (Ho, kh) x (Wo, kw) -> (To, Ho, Wo, kt, kh, kw)
    t, h, w = coords
    rows = (t[:, None, None, :, None, None] * grid[1] + h[None, :, None, None, :, None]) * grid[2] \
        + w[None, None, :, None, None, :]
    inside = (valid.reshape(out[0], kernel[0], out[1], kernel[1], out[2], kernel[2])
              .transpose(0, 2, 4, 1, 3, 5))
    num_in, num_out, k = int(np.prod(grid)), int(np.prod(out)), int(np.prod(kernel))
    rows = np.where(inside, rows, num_in).reshape(num_out, k)
    # the inverse: for each (input row, tap), the outputs that read it (several with upsampling or replicate padding)
    o_idx, tap = np.nonzero(rows < num_in)
    src = rows[o_idx, tap]
    order = np.lexsort((o_idx, tap, src))
    src, tap, o_idx = src[order], tap[order], o_idx[order]
    group = src * k + tap
    first = np.r_[0, np.nonzero(np.diff(group))[0] + 1]
    rank = np.arange(group.size) - np.repeat(first, np.diff(np.r_[first, group.size]))
    readers = np.full((num_in, k, int(rank.max()) + 1 if rank.size else 1), num_out, np.int64)
    readers[src, tap, rank] = o_idx
    return Tensor(rows.reshape(-1).astype(np.int32)), Tensor(readers.reshape(-1).astype(np.int32)), out


def _with_zero_row(x):
    """(N, P, C) -> (N, P + 1, C): the row that padding and missing taps point at."""
    return mint.cat([x, mint.zeros((x.shape[0], 1, x.shape[2]), dtype=x.dtype)], 1)


class _GatherMatmul(nn.Cell):
    """cols @ w with cols = gather(x, rows) for x (N, P, C), w (K*C, O); a hand-written backward: dw = cols^T dy and
    dx = gather(dy, readers) @ w^T, two matmuls instead of autodiff's scatter-add (~1.7x faster TAE steps)."""

    def construct(self, x, w, rows, readers):
        cols = ops.gather(_with_zero_row(x), rows, 1).reshape(-1, w.shape[0])
        return mint.matmul(cols, w).reshape(x.shape[0], -1, w.shape[1])

    def bprop(self, x, w, rows, readers, out, dout):
        n, p, c = x.shape
        o = w.shape[1]
        k = w.shape[0] // c
        m = readers.shape[0] // (p * k)
        # gathered after dout exists: under ms.jit the columns were otherwise gathered early and every conv's kept
        cols = ops.gather(_with_zero_row(ops.depend(x, dout)), rows, 1).reshape(-1, k * c)
        dw = MM_TN(cols, dout.reshape(-1, o))
        # dx[p] = sum over (tap, reader) of dy[reader] @ w_tap^T
        w_back = ops.transpose(w.reshape(k, 1, c, o), (0, 1, 3, 2))
        w_back = mint.broadcast_to(w_back, (k, m, o, c)).reshape(k * m * o, c)
        dcols = ops.gather(_with_zero_row(dout), readers, 1).reshape(-1, k * m * o)
        dx = mint.matmul(dcols, w_back).reshape(n, p, c)
        return dx, dw, ops.zeros_like(rows), ops.zeros_like(readers)


class Conv3dKernel(nn.Cell):
    """The convolution of channels-last x (B, T, H, W, C) with `geometry`, weight (O, C, kt, kh, kw), bias (O,)."""

    def __init__(self, geometry):
        super().__init__()
        self.geometry = geometry
        self.gather_matmul = _GatherMatmul()

    def construct(self, x, weight, bias):
        if fused():
            return self._fused(x, weight, bias)
        geometry = self.geometry
        b, t, h, w, c = x.shape
        o = weight.shape[0]
        if weight.shape[2:] == (1, 1, 1) and geometry.stride == (1, 1, 1) and geometry.upsample == (1, 1, 1) \
                and not any(geometry.padding):
            return linear(x, weight.reshape(o, c), bias)
        # rows ordered (tap, in-channel). ops.transpose, not mint.permute: under ms.jit the gradient through
        # mint.permute of a weight came out wrong when two convs had equal shapes (tests/tae/test_tae_model.py)
        w_mat = ops.transpose(weight, (2, 3, 4, 1, 0)).reshape(-1, o)
        frames_apart = geometry.kernel[0] == 1 and geometry.stride[0] == 1 and geometry.upsample[0] == 1 \
            and not any(geometry.padding[:2])
        grid = (1, h, w) if frames_apart else (t, h, w)  # a per-frame conv folds time into the batch: small maps
        rows, readers, out_grid = _gather_index(grid, geometry.key())
        out = self.gather_matmul(x.reshape(b * t if frames_apart else b, -1, c), w_mat, rows, readers).reshape(-1, o)
        if bias is not None:
            out = add_bias(out, bias)
        return out.reshape(b, t if frames_apart else out_grid[0], out_grid[1], out_grid[2], o)

    def _fused(self, x, weight, bias):
        geometry = self.geometry
        x = permute(x, (0, 4, 1, 2, 3))
        for axis, factor in enumerate(geometry.upsample):
            if factor > 1:
                x = ops.repeat_interleave(x, factor, axis=axis + 2)
        for axis, replicate in enumerate(geometry.replicate):
            pads = [0] * 6
            pads[4 - 2 * axis:6 - 2 * axis] = geometry.padding[2 * axis:2 * axis + 2]
            if any(pads):
                x = ops.pad(x, tuple(pads), mode="replicate" if replicate else "constant")
        out = permute(ops.conv3d(x, weight, stride=geometry.stride, pad_mode="valid"), (0, 2, 3, 4, 1))
        if bias is not None:
            out = out + bias
        return out
