"""Benchmark: peak host memory of TAE encode + decode with and without temporal tiling, by video length.

    python tools/benchmark_tae_memory.py --frames [64,256] --size 64 --base_channels 16

Each case runs in a fresh process (spawn) so its peak RSS (ru_maxrss) is its own; printed next to the RSS before
encoding (MindSpore + model) so the part that grows with the video is visible.
"""
import resource
import time
from typing import List

from jsonargparse import CLI

from mg.isolated import run_isolated


def _case(frames, size, base_channels, tiled, queue):
    import mg  # noqa: F401  (quiet logging before mindspore loads)
    import mindspore as ms
    import numpy as np

    from mg.models.tae import TemporalAutoencoder, tae_config

    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_device("CPU")
    tae = TemporalAutoencoder(tae_config("small", base_channels=base_channels))
    tae.set_train(False)
    x = ms.Tensor(np.random.default_rng(0).uniform(-1, 1, (1, 3, frames, size, size)).astype(np.float32))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.time()
    mean, _ = tae.encode(x, tiled=tiled)
    video = tae.decode(mean, frames, tiled=tiled)
    video.asnumpy()
    queue.put((before / 1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, time.time() - start))


def main(frames: List[int] = [64, 256], size: int = 64, base_channels: int = 16, untiled: bool = True):
    """Print peak RSS (MiB) of encode+decode per video length, tiled (32-frame tiles, 16-frame decoder overlap) and,
    with `untiled`, without tiling."""
    print(f"TAE preset small, base {base_channels}; video 1x3xTx{size}x{size}; peak RSS in MiB")
    print(f"{'frames':>6} {'tiling':>7} {'RSS before':>11} {'peak RSS':>9} {'growth':>7} {'seconds':>8}")
    for n in frames:
        for tiled in ([True, False] if untiled else [True]):
            before, peak, seconds = run_isolated(_case, (n, size, base_channels, tiled), f"frames={n}, tiled={tiled}")
            print(f"{n:>6} {('on' if tiled else 'off'):>7} {before:>11.0f} {peak:>9.0f} {peak - before:>7.0f} "
                  f"{seconds:>8.1f}")


if __name__ == "__main__":
    CLI(main)
