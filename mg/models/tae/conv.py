"""Convolutions for the TAE on channels-last tensors (B, T, H, W, C), with the implementation chosen by device here.

MindSpore's CPU kernels for k>1 convolutions run at ~1 GFLOP/s, and on CPU every kernel is memory-bound, so a
convolution is computed as one gather and one matmul: an index map (built once per shape with NumPy) lists, for each
output position and kernel tap, the input row it reads; padding points at an appended zero row (zero padding) or at
the clamped edge row (replicate padding), and a nearest-neighbour upsampling of the input is folded into the same map.
The backward is another gather + matmul through the inverse map (a custom bprop), which avoids the K full-size
zero-filled gradients that autodiff of K shifted slices produces. Bias gradients are a ones-row matmul: autodiff summed
the gradient over the leading axes of the 5-D output with a slow CPU ReduceSum (278 -> 49 ms of ReduceSum per
32-image toy TAE step, `tools/benchmark_tae_step.py --profile true`). On Ascend the fused `ops.conv3d` kernel is used.
Both take the standard weight layout (out, in, kt, kh, kw), so checkpoints are interchangeable.
"""
import math
from functools import lru_cache

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, mint, nn, ops
from mindspore.common.initializer import HeUniform, Uniform, initializer

from mg.models.copying_views import permute
from mg.models.expand import expand


def to_channels_last(x):
    """(B, C, T, H, W) -> (B, T, H, W, C)."""
    return permute(x, (0, 2, 3, 4, 1))


def to_channels_first(x):
    """(B, T, H, W, C) -> (B, C, T, H, W)."""
    return permute(x, (0, 4, 1, 2, 3))


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


_MATMUL_TA = ops.MatMul(transpose_a=True)  # a^T b without materialising a^T (a Transpose op is ~5x slower)


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
        dw = _MATMUL_TA(cols, dout.reshape(-1, o))
        # dx[p] = sum over (tap, reader) of dy[reader] @ w_tap^T
        w_back = ops.transpose(w.reshape(k, 1, c, o), (0, 1, 3, 2))
        w_back = mint.broadcast_to(w_back, (k, m, o, c)).reshape(k * m * o, c)
        dcols = ops.gather(_with_zero_row(dout), readers, 1).reshape(-1, k * m * o)
        dx = mint.matmul(dcols, w_back).reshape(n, p, c)
        return dx, dw, ops.zeros_like(rows), ops.zeros_like(readers)


class _RowsMatmul(nn.Cell):
    """x (M, C) @ w (C, O) with dw = x^T dy as a transposed-operand matmul (autodiff materialises x^T with a
    Transpose kernel)."""

    def construct(self, x, w):
        return mint.matmul(x, w)

    def bprop(self, x, w, out, dout):
        return mint.matmul(dout, ops.transpose(w, (1, 0))), _MATMUL_TA(x, dout)


class _RowBias(nn.Cell):
    """x (M, O) + b (O,) with db = ones(1, M) @ dy, a matmul rather than autodiff's CPU ReduceSum over the rows."""

    def construct(self, x, b):
        return x + expand(b, x.shape)  # not a broadcast: mg/models/expand.py

    def bprop(self, x, b, out, dout):
        return dout, mint.matmul(mint.ones((1, dout.shape[0]), dtype=dout.dtype), dout).reshape(b.shape)


class DenseRows(nn.Cell):
    """Channels-last x (..., C) @ w (C, O) (+ bias) on the flattened rows, with the backward of _RowsMatmul and
    _RowBias; the 1x1 convolutions and the one-frame temporal shortcut use it."""

    def __init__(self):
        super().__init__()
        self.matmul = _RowsMatmul()
        self.row_bias = _RowBias()

    def construct(self, x, w, bias):
        out = self.matmul(x.reshape(-1, x.shape[-1]), w)
        if bias is not None:
            out = self.row_bias(out, bias)
        return out.reshape(*x.shape[:-1], w.shape[1])


class GatherConv3d(nn.Cell):
    """The CPU path: convolution of channels-last x (B, T, H, W, C) as one gather + one matmul."""

    def __init__(self, geometry):
        super().__init__()
        self.geometry = geometry
        self.gather_matmul = _GatherMatmul()
        self.dense = DenseRows()
        self.row_bias = _RowBias()

    def construct(self, x, weight, bias):
        geometry = self.geometry
        b, t, h, w, c = x.shape
        o = weight.shape[0]
        # rows ordered (tap, in-channel). ops.transpose, not mint.permute: under ms.jit the gradient through
        # mint.permute of a weight came out wrong when two convs had equal shapes (tests/tae/test_tae_model.py)
        w_mat = ops.transpose(weight, (2, 3, 4, 1, 0)).reshape(-1, o)
        if w_mat.shape[0] == c and geometry.stride == (1, 1, 1) and geometry.upsample == (1, 1, 1) \
                and not any(geometry.padding):
            return self.dense(x, w_mat, bias)
        frames_apart = geometry.kernel[0] == 1 and geometry.stride[0] == 1 and geometry.upsample[0] == 1 \
            and not any(geometry.padding[:2])
        grid = (1, h, w) if frames_apart else (t, h, w)  # a per-frame conv folds time into the batch: small maps
        rows, readers, out_grid = _gather_index(grid, geometry.key())
        out = self.gather_matmul(x.reshape(b * t if frames_apart else b, -1, c), w_mat, rows, readers).reshape(-1, o)
        if bias is not None:
            out = self.row_bias(out, bias)
        return out.reshape(b, t if frames_apart else out_grid[0], out_grid[1], out_grid[2], o)


class FusedConv3d(nn.Cell):
    """The Ascend path: the same convolution with MindSpore's fused conv3d kernel, via channels-first."""

    def __init__(self, geometry):
        super().__init__()
        self.geometry = geometry

    def construct(self, x, weight, bias):
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


def select_conv3d(device=None):
    """The convolution implementation (a Cell class taking a ConvGeometry) for `device` (default: the current
    MindSpore device target)."""
    device = device or ms.get_context("device_target")
    return FusedConv3d if device == "Ascend" else GatherConv3d


# ---------------------------------------------------------------------------------------------------------------------
# Cells
# ---------------------------------------------------------------------------------------------------------------------
class Conv3d(nn.Cell):
    """Convolution of channels-last (B, T, H, W, C) tensors; weight layout (out, in, kt, kh, kw); PyTorch init.

    `geometry` gives stride, padding (zero or replicate per axis) and a nearest upsampling of the input. The
    implementation is picked for the device current at construction (set the device before building models).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=(1, 1, 1), padding=(0, 0, 0, 0, 0, 0),
                 bias=True, replicate=(False, False, False), upsample=(1, 1, 1)):
        super().__init__()
        self.geometry = ConvGeometry(kernel_size, stride, padding, replicate, upsample)
        self.impl = select_conv3d()(self.geometry)
        self.compute_dtype = None  # e.g. ms.bfloat16: run the conv in that dtype, return float32 (set_compute_dtype)
        shape = (out_channels, in_channels, *kernel_size)
        self.weight = Parameter(initializer(HeUniform(negative_slope=math.sqrt(5)), shape, ms.float32))
        fan_in = in_channels * int(np.prod(kernel_size))
        bound = 1 / math.sqrt(fan_in)
        self.bias = Parameter(initializer(Uniform(bound), (out_channels,), ms.float32)) if bias else None

    def construct(self, x):
        if self.compute_dtype is None:
            return self.impl(x, self.weight, self.bias)
        bias = None if self.bias is None else self.bias.astype(self.compute_dtype)
        out = self.impl(x.astype(self.compute_dtype), self.weight.astype(self.compute_dtype), bias)
        return out.astype(ms.float32)


def set_compute_dtype(cell, dtype):
    """Run every Conv3d inside `cell` in `dtype` (e.g. ms.bfloat16 on Ascend); norms and softmax stay float32."""
    for _, sub in cell.cells_and_names():
        if isinstance(sub, Conv3d):
            sub.compute_dtype = dtype
    return cell


class SpatialConv(Conv3d):
    """A 2-D convolution applied to every frame: kernel (1, k, k), zero padding, spatial stride, optional nearest
    2x upsampling of the input (`upsample=2`) folded into the convolution."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=None, upsample=1, bias=True):
        if padding is None:
            padding = (kernel_size // 2,) * 4
        super().__init__(in_channels, out_channels, (1, kernel_size, kernel_size), (1, stride, stride),
                         (0, 0, *padding), bias=bias, upsample=(1, upsample, upsample))


class TemporalConv(nn.Cell):
    """A 1-D convolution over time at every pixel: kernel (k, 1, 1), symmetric replicate padding, identity init.

    At initialisation the output equals the input (stride 1) or the input's even frames (stride 2), so image
    weights inflated into a video model keep producing the image model's frames on a static video. `upsample=2`
    repeats every input frame twice first (nearest), folded into the convolution.

    A single frame (an image) is a static video: with replicate padding every tap reads that frame, so the output is
    the frame times the sum of the taps, and upsampling would only repeat it. That one matmul is what runs, and the
    output keeps one frame (the decoder repeats it at the end): a T=1 image then costs one frame's work in every
    layer, not 8 decoded frames with a 3-tap gather each.
    """

    def __init__(self, channels, kernel_size=3, stride=1, upsample=1):
        super().__init__()
        pad = kernel_size // 2
        self.conv = Conv3d(channels, channels, (kernel_size, 1, 1), (stride, 1, 1), (pad, pad, 0, 0, 0, 0),
                           replicate=(True, False, False), upsample=(upsample, 1, 1))
        weight = np.zeros((channels, channels, kernel_size, 1, 1), np.float32)
        weight[np.arange(channels), np.arange(channels), pad] = 1
        self.conv.weight.set_data(Tensor(weight))
        self.conv.bias.set_data(Tensor(np.zeros(channels, np.float32)))
        self.dense = DenseRows()

    def construct(self, x):
        if x.shape[1] > 1:
            return self.conv(x)
        conv = self.conv
        # (in, out): the taps summed
        weight = ops.transpose(conv.weight.sum(axis=2).reshape(conv.weight.shape[0], -1), (1, 0))
        dtype = conv.compute_dtype
        if dtype is None:
            return self.dense(x, weight, conv.bias)
        return self.dense(x.astype(dtype), weight.astype(dtype), conv.bias.astype(dtype)).astype(ms.float32)
