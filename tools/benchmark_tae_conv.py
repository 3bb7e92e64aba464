"""Benchmark: the TAE's gather + matmul convolution against plain MindSpore ops.conv3d on the current device.

For the convolution shapes the TAE uses (3x3 spatial, k=3 temporal with replicate padding, stride-2 spatial
downsampling, nearest-2x upsampling + 3x3), prints GFLOP/s of both, forward and forward+backward, in PyNative and
under ms.jit, and the speed-up. The baseline is what a plain implementation does: channels-first input,
upsampling and padding as separate ops, then ops.conv3d.

    python tools/benchmark_tae_conv.py --channels 64 --frames 8 --size 32
"""
import time

import mg  # noqa: F401  (quiet logging before mindspore loads)
import mindspore as ms
import numpy as np
from jsonargparse import CLI
from mindspore import nn, ops

from mg.backends import Conv3dKernel, ConvGeometry
from mg.models.tae.conv import to_channels_first, to_channels_last

CASES = {  # name: (kernel, stride, padding, replicate, upsample)
    "spatial 3x3": ((1, 3, 3), (1, 1, 1), (0, 0, 1, 1, 1, 1), (False, False, False), (1, 1, 1)),
    "temporal k3": ((3, 1, 1), (1, 1, 1), (1, 1, 0, 0, 0, 0), (True, False, False), (1, 1, 1)),
    "down 3x3 s2": ((1, 3, 3), (1, 2, 2), (0, 0, 0, 1, 0, 1), (False, False, False), (1, 1, 1)),
    "up2 + 3x3": ((1, 3, 3), (1, 1, 1), (0, 0, 1, 1, 1, 1), (False, False, False), (1, 2, 2)),
}


class _PlainConv3d(nn.Cell):
    """Channels-first baseline: repeat, pad, ops.conv3d."""

    def __init__(self, geometry):
        super().__init__()
        self.geometry = geometry

    def construct(self, x, weight, bias):
        for axis, factor in enumerate(self.geometry.upsample):
            if factor > 1:
                x = ops.repeat_interleave(x, factor, axis=axis + 2)
        for axis, replicate in enumerate(self.geometry.replicate):
            pads = [0] * 6
            pads[4 - 2 * axis:6 - 2 * axis] = self.geometry.padding[2 * axis:2 * axis + 2]
            if any(pads):
                x = ops.pad(x, tuple(pads), mode="replicate" if replicate else "constant")
        return ops.conv3d(x, weight, stride=self.geometry.stride, pad_mode="valid")


def _time(fn, repeats):
    fn()  # warm-up (and compilation under jit)
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    (out[0] if isinstance(out, tuple) else out).asnumpy()
    return (time.perf_counter() - start) / repeats


def _runner(conv, backward, jit):
    """conv(x, w) (forward) or its gradients (forward+backward), optionally compiled."""
    def forward(x, w):
        return conv(x, w, None)

    def loss(x, w):
        return conv(x, w, None).sum()

    fn = ms.grad(loss, grad_position=(0, 1)) if backward else forward
    return ms.jit(fn) if jit else fn


def main(channels: int = 64, frames: int = 8, size: int = 32, batch: int = 1, repeats: int = 3):
    """Run the benchmark; the default sizes finish in a few minutes on 2 cores."""
    ms.set_context(mode=ms.PYNATIVE_MODE)
    rng = np.random.default_rng(0)
    x_cf = ms.Tensor(rng.standard_normal((batch, channels, frames, size, size)).astype(np.float32))
    x_cl = to_channels_last(x_cf)
    print(f"device {ms.get_context('device_target')}, x (B, C, T, H, W) = {tuple(x_cf.shape)}")
    print(f"{'case':<12} {'mode':<9} {'pass':<8} {'ops.conv3d GF/s':>16} {'gather GF/s':>12} {'speed-up':>9} "
          f"{'max |diff|':>11}")
    for name, spec in CASES.items():
        geometry = ConvGeometry(*spec)
        w = ms.Tensor(rng.standard_normal((channels, channels, *geometry.kernel)).astype(np.float32) * 0.05)
        conv = Conv3dKernel(geometry)
        out = conv(x_cl, w, None)
        plain = _PlainConv3d(geometry)
        diff = float(np.abs(to_channels_first(out).asnumpy() - plain(x_cf, w, None).asnumpy()).max())
        flops = 2 * out.size * channels * int(np.prod(geometry.kernel))
        for mode in ("pynative", "jit"):
            for label, mult in (("fwd", 1), ("fwd+bwd", 3)):
                base = _runner(plain, label != "fwd", mode == "jit")
                ours = _runner(conv, label != "fwd", mode == "jit")
                rate_base = mult * flops / _time(lambda: base(x_cf, w), repeats) / 1e9  # noqa: B023
                rate_ours = mult * flops / _time(lambda: ours(x_cl, w), repeats) / 1e9  # noqa: B023
                print(f"{name:<12} {mode:<9} {label:<8} {rate_base:>16.2f} {rate_ours:>12.2f} "
                      f"{rate_ours / rate_base:>8.1f}x {diff:>11.2e}")


if __name__ == "__main__":
    CLI(main)
