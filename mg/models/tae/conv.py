"""Convolutions for the TAE, with the implementation chosen by device in one place.

MindSpore's CPU kernels for k>1 convolutions run at ~1 GFLOP/s while matmul runs two orders of magnitude faster, so on
CPU a convolution is computed as im2col (strided slices of the padded input stacked along a tap axis) followed by ONE
matmul. On Ascend the fused `ops.conv3d` kernel is used. Both take the standard weight layout (out, in, kt, kh, kw),
so checkpoints are interchangeable; autodiff of slice/stack/matmul gives the gradients.
"""
import math

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, mint, nn, ops
from mindspore.common.initializer import HeUniform, Uniform, initializer


def _conv3d_fused(x, weight, bias, stride, padding):
    x = _pad(x, padding)
    out = ops.conv3d(x, weight, stride=stride, pad_mode="valid")
    if bias is not None:
        out = out + bias.reshape(1, -1, 1, 1, 1)
    return out


def _conv3d_matmul(x, weight, bias, stride, padding):
    x = _pad(x, padding)
    b, c, t, h, w = x.shape
    o, _, kt, kh, kw = weight.shape
    st, sh, sw = stride
    to, ho, wo = (t - kt) // st + 1, (h - kh) // sh + 1, (w - kw) // sw + 1
    if kt * kh * kw == 1 and stride == (1, 1, 1):
        cols = x.reshape(b, c, t * h * w)
    else:
        taps = [x]
        for axis, k, s, n in ((2, kt, st, to), (3, kh, sh, ho), (4, kw, sw, wo)):
            expanded = []
            for part in taps:
                expanded = expanded + _taps_along(part, axis, k, s, n)
            taps = expanded
        # (B, C, K, ...) flattens as c * K + k, the order of weight.reshape(O, C * K)
        cols = ops.stack(taps, axis=2).reshape(b, c * kt * kh * kw, to * ho * wo)
    w2 = weight.reshape(o, -1)
    if b == 1:  # a plain 2-D matmul is faster than the broadcast batched form
        out = mint.matmul(w2, cols[0]).reshape(1, o, to, ho, wo)
    else:
        out = mint.matmul(w2, cols).reshape(b, o, to, ho, wo)
    if bias is not None:
        out = out + bias.reshape(1, -1, 1, 1, 1)
    return out


def _taps_along(x, axis, k, s, n):
    """The k shifted views x[i + s * m] (m < n) along `axis`.

    A stride goes through a (length / s, s) reshape and a phase select instead of a strided slice, whose gradient
    (StridedSliceGrad) fails on CPU in MindSpore 2.10.
    """
    if s == 1:
        return [_index(x, axis, slice(i, i + n)) for i in range(k)]
    length = x.shape[axis]
    extra = -length % s
    if extra:
        pads = [0] * (2 * x.ndim)
        pads[2 * (x.ndim - 1 - axis) + 1] = extra
        x = ops.pad(x, tuple(pads))
    x = x.reshape(x.shape[:axis] + ((length + extra) // s, s) + x.shape[axis + 1:])
    phases = [_index(x, axis + 1, r) for r in range(s)]
    return [_index(phases[i % s], axis, slice(i // s, i // s + n)) for i in range(k)]


def _index(x, axis, idx):
    """x[..., idx] on axis 2, 3, 4 or 5, written out so that graph mode (ms.jit) parses it."""
    if axis == 2:
        return x[:, :, idx]
    if axis == 3:
        return x[:, :, :, idx]
    if axis == 4:
        return x[:, :, :, :, idx]
    return x[:, :, :, :, :, idx]


def _pad(x, padding):
    """Zero-pad (t0, t1, h0, h1, w0, w1) on the last three axes."""
    if not any(padding):
        return x
    t0, t1, h0, h1, w0, w1 = padding
    return ops.pad(x, (w0, w1, h0, h1, t0, t1))


def select_conv3d(device=None):
    """The convolution implementation for `device` (default: the current MindSpore device target)."""
    device = device or ms.get_context("device_target")
    return _conv3d_fused if device == "Ascend" else _conv3d_matmul


# ---------------------------------------------------------------------------------------------------------------------
# Cells
# ---------------------------------------------------------------------------------------------------------------------
class Conv3d(nn.Cell):
    """Convolution with explicit per-side zero padding; weight layout (out, in, kt, kh, kw); PyTorch default init.

    The implementation is picked for the device current at construction (set the device before building models).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=(1, 1, 1), padding=(0, 0, 0, 0, 0, 0),
                 bias=True):
        super().__init__()
        self.stride = tuple(stride)
        self.padding = tuple(padding)
        self.impl = select_conv3d()
        self.compute_dtype = None  # e.g. ms.bfloat16: run the conv in that dtype, return float32 (set_compute_dtype)
        shape = (out_channels, in_channels, *kernel_size)
        self.weight = Parameter(initializer(HeUniform(negative_slope=math.sqrt(5)), shape, ms.float32))
        fan_in = in_channels * int(np.prod(kernel_size))
        bound = 1 / math.sqrt(fan_in)
        self.bias = Parameter(initializer(Uniform(bound), (out_channels,), ms.float32)) if bias else None

    def construct(self, x):
        return self.apply(x, self.weight, self.stride, self.padding)

    def apply(self, x, weight, stride, padding):
        """This layer's convolution (bias, compute dtype) with a given weight, stride and padding."""
        if self.compute_dtype is None:
            return self.impl(x, weight, self.bias, stride, padding)
        bias = None if self.bias is None else self.bias.astype(self.compute_dtype)
        out = self.impl(x.astype(self.compute_dtype), weight.astype(self.compute_dtype), bias, stride, padding)
        return out.astype(ms.float32)


def set_compute_dtype(cell, dtype):
    """Run every Conv3d inside `cell` in `dtype` (e.g. ms.bfloat16 on Ascend); norms and softmax stay float32."""
    for _, sub in cell.cells_and_names():
        if isinstance(sub, Conv3d):
            sub.compute_dtype = dtype
    return cell


class SpatialConv(Conv3d):
    """A 2-D convolution applied to every frame: kernel (1, k, k), zero padding, spatial stride only."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=None):
        if padding is None:
            padding = (kernel_size // 2,) * 4
        super().__init__(in_channels, out_channels, (1, kernel_size, kernel_size), (1, stride, stride),
                         (0, 0, *padding))


class TemporalConv(nn.Cell):
    """A 1-D convolution over time at every pixel: kernel (k, 1, 1), symmetric replicate padding, identity init.

    At initialisation the output equals the input (stride 1) or the input's even frames (stride 2), so image
    weights inflated into a video model keep producing the image model's frames on a static video.
    """

    def __init__(self, channels, kernel_size=3, stride=1, out_channels=None):
        super().__init__()
        out_channels = out_channels or channels
        self.pad = kernel_size // 2
        self.conv = Conv3d(channels, out_channels, (kernel_size, 1, 1), (stride, 1, 1))
        weight = np.zeros((out_channels, channels, kernel_size, 1, 1), np.float32)
        weight[np.arange(min(channels, out_channels)), np.arange(min(channels, out_channels)), kernel_size // 2] = 1
        self.conv.weight.set_data(Tensor(weight))
        self.conv.bias.set_data(Tensor(np.zeros(out_channels, np.float32)))

    def construct(self, x):
        if x.shape[2] == 1:  # replicate padding makes every tap the same frame: one 1x1 conv with the summed kernel
            taps = self.conv.weight
            weight = taps[:, :, 0:1]
            for i in range(1, taps.shape[2]):  # slices + adds: ReduceSum's gradient fails to compile under ms.jit
                weight = weight + taps[:, :, i:i + 1]
            return self.conv.apply(x, weight, (1, 1, 1), (0, 0, 0, 0, 0, 0))
        if self.pad:
            p = self.pad
            x = mint.cat([x[:, :, :1]] * p + [x] + [x[:, :, -1:]] * p, dim=2)
        return self.conv(x)
