"""Normalisations with statistics in fp32: RMSNorm (the transformer) and per-frame GroupNorm (the TAE).

Fused on Ascend (`ops.rms_norm`, mint's group_norm); elsewhere closed-form backwards: RMSNorm's
dx = rstd * (g - xhat * mean(g * xhat)) with g = dy * w, GroupNorm's dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),
per-channel means as matmuls with a row of ones (CPU reductions over a middle axis run ~10x slower) instead of
autodiff's chain of broadcasts and reductions, and RMSNorm's means over the last axis as matmuls with a column of ones
(CPU ReduceMean over it is ~4x slower).
"""
import mindspore as ms
from mindspore import mint, nn, ops

from mg.backends.device import fused
from mg.backends.dense import MM, row_sums
from mg.backends.tensors import expand


def _last_axis_means(x):
    """x (..., D) -> (..., 1): the mean over the last axis, as a matmul with a column of ones."""
    d = x.shape[-1]
    return MM(x.reshape(-1, d), mint.ones((d, 1), dtype=x.dtype)).reshape(x.shape[:-1] + (1,)) / d


class _PlainRMSNorm(nn.Cell):
    def __init__(self, eps):
        super().__init__()
        self.eps = eps

    def _normed(self, x):
        x32 = x.astype(ms.float32)
        inv_rms = expand(mint.rsqrt(_last_axis_means(x32 * x32) + self.eps), x.shape)
        return x32 * inv_rms, inv_rms

    def construct(self, x, weight):
        return (self._normed(x)[0] * expand(weight.astype(ms.float32), x.shape)).astype(x.dtype)

    def bprop(self, x, weight, out, dout):
        normed, inv_rms = self._normed(x)
        g = dout.astype(ms.float32)
        g_w = g * expand(weight.astype(ms.float32), x.shape)
        dx = inv_rms * (g_w - normed * expand(_last_axis_means(g_w * normed), x.shape))
        dw = row_sums((g * normed).reshape(1, -1, weight.shape[0])).reshape(weight.shape)
        return dx.astype(x.dtype), dw.astype(weight.dtype)


class RMSNormKernel(nn.Cell):
    """x * rsqrt(mean(x^2) + eps) * weight over the last axis, in the input dtype."""

    def __init__(self, eps):
        super().__init__()
        self.eps = eps
        self.plain = _PlainRMSNorm(eps)

    def construct(self, x, weight):
        if fused():
            return ops.rms_norm(x, weight.astype(x.dtype), self.eps)[0]
        return self.plain(x, weight)


class _PlainGroupNorm(nn.Cell):
    """Group norm of (N, L, C) rows over (L, C / groups), per-channel operands tiled (mg/backends/tensors.py)."""

    def __init__(self, groups, eps):
        super().__init__()
        self.groups, self.eps = groups, eps

    def _group_mean(self, per_channel):
        """(N, 1, C) per-channel values -> their mean over each group, broadcast back to (N, 1, C)."""
        n, _, c = per_channel.shape
        g = per_channel.reshape(n, self.groups, c // self.groups).mean(-1, keep_dims=True)
        return mint.broadcast_to(g, (n, self.groups, c // self.groups)).reshape(n, 1, c)

    def _normalise(self, x):
        n, length, _ = x.shape
        averager = mint.ones((n, 1, length), dtype=x.dtype) * (1.0 / length)
        centred = x - expand(self._group_mean(mint.matmul(averager, x)), x.shape)
        rstd = mint.rsqrt(self._group_mean(mint.matmul(averager, centred * centred)) + self.eps)
        return centred * expand(rstd, x.shape), rstd, averager

    def construct(self, x, weight, bias):
        return self._normalise(x)[0] * expand(weight, x.shape) + expand(bias, x.shape)

    def bprop(self, x, weight, bias, out, dout):
        xhat, rstd, averager = self._normalise(x)
        mean_dy = mint.matmul(averager, dout)                # (N, 1, C)
        mean_dy_xhat = mint.matmul(averager, dout * xhat)
        length = x.shape[1]
        d_bias = mean_dy.sum(axis=(0, 1)) * length
        d_weight = mean_dy_xhat.sum(axis=(0, 1)) * length
        dx = dout * expand(rstd * weight, x.shape) \
            - xhat * expand(rstd * self._group_mean(mean_dy_xhat * weight), x.shape) \
            - expand(rstd * self._group_mean(mean_dy * weight), x.shape)
        return dx, d_weight, d_bias


class GroupNormKernel(nn.Cell):
    """GroupNorm of (N, L, C) rows (channels last) over L and C / groups, then a per-channel affine map."""

    def __init__(self, groups, eps):
        super().__init__()
        self.groups, self.eps = groups, eps
        self.plain = _PlainGroupNorm(groups, eps)

    def construct(self, x, weight, bias):
        if fused():
            n, length, c = x.shape
            channels_first = ops.transpose(x, (0, 2, 1)).reshape(n, c, length, 1)
            out = mint.nn.functional.group_norm(channels_first, self.groups, weight, bias, self.eps)
            return ops.transpose(out.reshape(n, c, length), (0, 2, 1))
        return self.plain(x, weight, bias)
