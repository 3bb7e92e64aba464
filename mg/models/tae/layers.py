"""2.5-D building blocks of the TAE; every tensor is channels-last (B, T, H, W, C).

An image-autoencoder layer acts on each frame (time folded into the batch); each spatial conv is followed by a temporal
conv and each spatial attention by a temporal attention. The temporal parts start as the identity (conv center tap =
identity, attention output projection = 0), so inflated image weights give the image model's frames on static video.
"""
import math

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, mint, nn

from mg.backends import GroupNormKernel, expand, permute
from mg.models.tae.conv import SpatialConv, TemporalConv


class GroupNorm(nn.Cell):
    """GroupNorm over (C / groups, H, W) of each frame separately, so frames (and temporal tiles) don't interact."""

    def __init__(self, groups, channels, eps=1e-6):
        super().__init__()
        self.weight = Parameter(Tensor(np.ones(channels, np.float32)))
        self.bias = Parameter(Tensor(np.zeros(channels, np.float32)))
        self.function = GroupNormKernel(groups, eps)

    def construct(self, x):
        b, t, h, w, c = x.shape
        return self.function(x.reshape(b * t, h * w, c), self.weight, self.bias).reshape(b, t, h, w, c)


class Conv25d(nn.Cell):
    """A spatial k x k conv on every frame followed by a k=3 temporal conv (replicate padding, identity init)."""

    def __init__(self, in_channels, out_channels, kernel_size=3):
        super().__init__()
        self.spatial = SpatialConv(in_channels, out_channels, kernel_size)
        self.temporal = TemporalConv(out_channels)

    def construct(self, x):
        return self.temporal(self.spatial(x))


class ResnetBlock(nn.Cell):
    """diffusers ResnetBlock2D inflated: norm-SiLU-conv twice, 1x1 shortcut when the width changes."""

    def __init__(self, in_channels, out_channels, groups):
        super().__init__()
        self.norm1 = GroupNorm(groups, in_channels)
        self.conv1 = Conv25d(in_channels, out_channels)
        self.norm2 = GroupNorm(groups, out_channels)
        self.conv2 = Conv25d(out_channels, out_channels)
        self.conv_shortcut = SpatialConv(in_channels, out_channels, 1) if in_channels != out_channels else None

    def construct(self, x):
        h = self.conv1(mint.nn.functional.silu(self.norm1(x)))
        h = self.conv2(mint.nn.functional.silu(self.norm2(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


def _attention(q, k, v):
    """Single-head softmax attention over the middle axis of (N, L, C) tensors, in fp32."""
    scores = mint.matmul(q, permute(k, (0, 2, 1))) * (1.0 / math.sqrt(q.shape[-1]))
    return mint.matmul(mint.softmax(scores.astype(ms.float32), dim=-1).astype(v.dtype), v)


class SpatialAttention(nn.Cell):
    """diffusers' VAE attention (GroupNorm, single head over H*W tokens, residual) on every frame."""

    def __init__(self, channels, groups):
        super().__init__()
        self.group_norm = GroupNorm(groups, channels)
        self.to_q = mint.nn.Linear(channels, channels)
        self.to_k = mint.nn.Linear(channels, channels)
        self.to_v = mint.nn.Linear(channels, channels)
        self.to_out = mint.nn.Linear(channels, channels)

    def construct(self, x):
        b, t, h, w, c = x.shape
        tokens = self.group_norm(x).reshape(b * t, h * w, c)
        out = self.to_out(_attention(self.to_q(tokens), self.to_k(tokens), self.to_v(tokens)))
        return x + out.reshape(b, t, h, w, c)


class TemporalAttention(nn.Cell):
    """Single-head attention over the T frames at every pixel; per-token LayerNorm; zero-initialised output."""

    def __init__(self, channels):
        super().__init__()
        self.norm_weight = Parameter(Tensor(np.ones(channels, np.float32)))
        self.norm_bias = Parameter(Tensor(np.zeros(channels, np.float32)))
        self.to_q = mint.nn.Linear(channels, channels)
        self.to_k = mint.nn.Linear(channels, channels)
        self.to_v = mint.nn.Linear(channels, channels)
        self.to_out = mint.nn.Linear(channels, channels)
        self.to_out.weight.set_data(Tensor(np.zeros((channels, channels), np.float32)))
        self.to_out.bias.set_data(Tensor(np.zeros(channels, np.float32)))

    def construct(self, x):
        b, t, h, w, c = x.shape
        tokens = permute(x, (0, 2, 3, 1, 4)).reshape(b * h * w, t, c)
        mean = tokens.mean(axis=-1, keep_dims=True)
        var = ((tokens - mean) ** 2).mean(axis=-1, keep_dims=True)
        normed = (tokens - mean) * mint.rsqrt(var + 1e-6) * self.norm_weight + self.norm_bias
        out = self.to_out(_attention(self.to_q(normed), self.to_k(normed), self.to_v(normed)))
        return x + permute(out.reshape(b, h, w, t, c), (0, 3, 1, 2, 4))


class Downsample(nn.Cell):
    """Spatial stride-2 3x3 conv (diffusers' (0, 1, 0, 1) padding) then a stride-2 k=3 temporal conv.

    With symmetric replicate padding a length-T input gives ceil(T / 2) frames; at init frame i is input frame 2i.
    """

    def __init__(self, channels):
        super().__init__()
        self.conv = SpatialConv(channels, channels, 3, stride=2, padding=(0, 1, 0, 1))
        self.temporal = TemporalConv(channels, stride=2)

    def construct(self, x):
        return self.temporal(self.conv(x))


class Upsample(nn.Cell):
    """Spatial nearest 2x + 3x3 conv, then temporal nearest 2x + k=3 temporal conv (identity init); each nearest
    upsampling is folded into the convolution that follows it."""

    def __init__(self, channels):
        super().__init__()
        self.conv = SpatialConv(channels, channels, 3, upsample=2)
        self.temporal = TemporalConv(channels, upsample=2)

    def construct(self, x):
        return self.temporal(self.conv(x))


class MidBlock(nn.Cell):
    """ResNet block, spatial + temporal attention, ResNet block (diffusers UNetMidBlock2D names)."""

    def __init__(self, channels, groups):
        super().__init__()
        self.resnets = nn.CellList([ResnetBlock(channels, channels, groups), ResnetBlock(channels, channels, groups)])
        self.attentions = nn.CellList([SpatialAttention(channels, groups)])
        self.temporal_attentions = nn.CellList([TemporalAttention(channels)])

    def construct(self, x):
        x = self.resnets[0](x)
        x = self.temporal_attentions[0](self.attentions[0](x))
        return self.resnets[1](x)
