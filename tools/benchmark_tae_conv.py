"""Benchmark: the TAE's matmul convolution against MindSpore's ops.conv3d on the current device (CPU by default).

Prints GFLOP/s of both implementations, forward and forward+backward, and their ratio, for the convolution shapes the
TAE uses (a 3x3 spatial conv, a k=3 temporal conv, a stride-2 spatial downsampling conv).

    python tools/benchmark_tae_conv.py --channels 128 --frames 4 --size 32
"""
import time

import mg  # noqa: F401  (quiet logging before mindspore loads)
import mindspore as ms
import numpy as np
from jsonargparse import CLI

from mg.models.tae.conv import _conv3d_fused, _conv3d_matmul

CASES = {  # name: (kernel, stride, padding)
    "spatial 3x3": ((1, 3, 3), (1, 1, 1), (0, 0, 1, 1, 1, 1)),
    "temporal k3": ((3, 1, 1), (1, 1, 1), (1, 1, 0, 0, 0, 0)),
    "down 3x3 s2": ((1, 3, 3), (1, 2, 2), (0, 0, 0, 1, 0, 1)),
}


def _time(fn, repeats):
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    (out[0] if isinstance(out, tuple) else out).asnumpy()
    return (time.perf_counter() - start) / repeats


def main(channels: int = 128, frames: int = 4, size: int = 32, batch: int = 1, repeats: int = 3):
    """Run the benchmark; all sizes are small so it finishes in about a minute on 2 cores."""
    ms.set_context(mode=ms.PYNATIVE_MODE)
    rng = np.random.default_rng(0)
    x = ms.Tensor(rng.standard_normal((batch, channels, frames, size, size)).astype(np.float32))
    print(f"device {ms.get_context('device_target')}, x {tuple(x.shape)}, weight (C, C, kt, kh, kw)")
    print(f"{'case':<13} {'pass':<8} {'ops.conv3d GF/s':>16} {'matmul GF/s':>12} {'speed-up':>9} {'max |diff|':>11}")
    for name, (kernel, stride, padding) in CASES.items():
        w = ms.Tensor(rng.standard_normal((channels, channels, *kernel)).astype(np.float32) * 0.05)
        out = _conv3d_matmul(x, w, None, stride, padding)
        diff = float(np.abs(out.asnumpy() - _conv3d_fused(x, w, None, stride, padding).asnumpy()).max())
        flops = 2 * out.size * channels * int(np.prod(kernel))
        for label, mult in (("fwd", 1), ("fwd+bwd", 3)):
            rates = []
            for impl in (_conv3d_fused, _conv3d_matmul):
                if label == "fwd":
                    fn = lambda impl=impl: impl(x, w, None, stride, padding)  # noqa: E731
                else:
                    fn = lambda impl=impl: ms.grad(lambda a, b: impl(a, b, None, stride, padding).sum(),  # noqa: E731
                                                   grad_position=(0, 1))(x, w)
                rates.append(mult * flops / _time(fn, repeats) / 1e9)
            ratio = rates[1] / rates[0]
            print(f"{name:<13} {label:<8} {rates[0]:>16.2f} {rates[1]:>12.2f} {ratio:>8.1f}x {diff:>11.2e}")


if __name__ == "__main__":
    CLI(main)
