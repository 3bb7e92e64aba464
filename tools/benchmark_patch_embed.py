"""Benchmark: the transformer's patch embedding (reshape + matmul) against MindSpore's nn.Conv3d with kernel = stride,
the plain way to write it. Jitted forward and forward+backward (input and weight gradients), median of `repeats`.

    python tools/benchmark_patch_embed.py --batch 16 --channels 16 --frames 3 --size 8 --dim 128
"""
import time

import mg  # noqa: F401  (quiet logging before mindspore loads)
import mindspore as ms
import numpy as np
from jsonargparse import CLI
from mindspore import mint, nn

from mg.models.dit.embeddings import PatchEmbed3D


class _ConvPatchEmbed(nn.Cell):
    """The baseline: nn.Conv3d, then (B, D, N) -> (B, N, D)."""

    def __init__(self, channels, dim, patch):
        super().__init__()
        self.proj = nn.Conv3d(channels, dim, patch, stride=patch, pad_mode="valid", has_bias=True)

    def construct(self, x):
        x = self.proj(x)
        return mint.transpose(x.reshape(x.shape[0], x.shape[1], -1), 1, 2)


def _squared_sum(net):
    def loss(x):
        return (net(x) ** 2).sum()
    return loss


def _median_ms(fn, x, repeats):
    fn(x)  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn(x)
        (out[0] if isinstance(out, tuple) else out).asnumpy()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main(batch: int = 16, channels: int = 16, frames: int = 3, size: int = 8, dim: int = 128, repeats: int = 7):
    """Defaults: one stage-2 video batch of the toy model."""
    ms.set_context(mode=ms.PYNATIVE_MODE)
    x = ms.Tensor(np.random.default_rng(0).standard_normal((batch, channels, frames, size, size)).astype(np.float32))
    print(f"x (B, C, T, H, W) = {tuple(x.shape)}, dim {dim}, patch (1, 2, 2)")
    print(f"{'pass':<8} {'nn.Conv3d ms':>13} {'matmul ms':>10} {'speed-up':>9}")
    nets = [_ConvPatchEmbed(channels, dim, (1, 2, 2)), PatchEmbed3D(channels, dim, (1, 2, 2))]
    for label in ("fwd", "fwd+bwd"):
        times = []
        for net in nets:
            fn = net.construct if label == "fwd" else ms.grad(_squared_sum(net), 0, net.trainable_params())
            times.append(_median_ms(ms.jit(fn), x, repeats))
        print(f"{label:<8} {times[0]:>13.2f} {times[1]:>10.2f} {times[0] / times[1]:>8.1f}x")


if __name__ == "__main__":
    CLI(main)
