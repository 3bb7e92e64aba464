"""Convolutions of the TAE on channels-last tensors (B, T, H, W, C), weight layout (out, in, kt, kh, kw) and
PyTorch's initialisation; mg.backends computes them (docs/tae.md)."""
import math

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import HeUniform, Uniform, initializer

from mg.backends import Conv3dKernel, ConvGeometry, linear, permute


def to_channels_last(x):
    """(B, C, T, H, W) -> (B, T, H, W, C)."""
    return permute(x, (0, 2, 3, 4, 1))


def to_channels_first(x):
    """(B, T, H, W, C) -> (B, C, T, H, W)."""
    return permute(x, (0, 4, 1, 2, 3))


class Conv3d(nn.Cell):
    """Convolution of channels-last (B, T, H, W, C) tensors; weight layout (out, in, kt, kh, kw); PyTorch init.

    `geometry` gives stride, padding (zero or replicate per axis) and a nearest upsampling of the input. The
    implementation is mg.backends'.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=(1, 1, 1), padding=(0, 0, 0, 0, 0, 0),
                 bias=True, replicate=(False, False, False), upsample=(1, 1, 1)):
        super().__init__()
        self.geometry = ConvGeometry(kernel_size, stride, padding, replicate, upsample)
        self.impl = Conv3dKernel(self.geometry)
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

    def construct(self, x):
        if x.shape[1] > 1:
            return self.conv(x)
        conv = self.conv
        weight = conv.weight.sum(axis=2).reshape(conv.weight.shape[0], -1)  # (out, in): the taps summed
        dtype = conv.compute_dtype
        if dtype is None:
            return linear(x, weight, conv.bias)
        return linear(x.astype(dtype), weight.astype(dtype), conv.bias.astype(dtype)).astype(ms.float32)
