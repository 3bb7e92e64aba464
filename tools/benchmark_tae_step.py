"""Benchmark: time and peak host memory of a jitted TAE training step, by batch shape (images and videos).

    python tools/benchmark_tae_step.py --batches "[[2, 16], [8, 1], [32, 1]]" --size 64 --base_channels 16

Each batch shape (batch size, frames) runs in a fresh process (spawn), so its peak RSS (ru_maxrss) and its compile
are its own: `TAETrainStep` with L2 + KL and AdamW, as configs/tae/train_toy.yaml trains, on random input. Prints the
first step (compile + run), the median of the timed steps after it, frames per second, and the peak RSS.
With --profile true, one more step runs under MindSpore's profiler and the kernel time per op type is printed
(kernels of a jitted graph can overlap on the two cores, so the shares are of summed kernel time, not of the step).
"""
import resource
import time
from typing import List, Tuple

from jsonargparse import CLI

from mg.isolated import run_isolated


def _case(batch, frames, size, base_channels, steps, profile, queue):
    import mg  # noqa: F401  (quiet logging before mindspore loads)
    import mindspore as ms
    import numpy as np

    from mg.models.tae import TemporalAutoencoder, tae_config
    from mg.models.tae.losses import TAELoss, TAELossConfig
    from mg.optim import build_adamw
    from mg.profiling import op_type_times
    from mg.training.tae_step import TAETrainStep

    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_device("CPU")
    ms.set_seed(0)
    tae = TemporalAutoencoder(tae_config("small", base_channels=base_channels))
    loss = TAELoss(TAELossConfig(l1_weight=0.0, l2_weight=1.0, kl_weight=1e-6, opl_weight=0.0))
    step = TAETrainStep(tae, loss, build_adamw(tae.trainable_params(), lr=1e-4, weight_decay=0.0), jit=True,
                        clip_grad_norm=1.0)
    x = ms.Tensor(np.random.default_rng(0).uniform(-1, 1, (batch, 3, frames, size, size)).astype(np.float32))
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        step(x, i)
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    op_times = op_type_times(lambda: step(x, steps + 1)) if profile else []
    queue.put((times[0], float(np.median(times[1:])), peak, op_times))


def main(batches: List[Tuple[int, int]] = [(2, 16), (8, 1), (32, 1)], size: int = 64, base_channels: int = 16,
         steps: int = 3, profile: bool = False, top: int = 10):
    """Print, per (batch size, frames), the first step's seconds, the median s/step of `steps` more, frames/s and
    the peak RSS in MiB of a jitted TAE training step (preset small with `base_channels`, size x size frames);
    with `profile`, the `top` op types by kernel time of one more step."""
    from mg.profiling import format_op_times
    print(f"TAE preset small, base {base_channels}, {size}x{size}; jitted train step (L2 + KL, AdamW)")
    print(f"{'batch':>5} {'frames':>6} {'first s':>8} {'s/step':>7} {'frames/s':>9} {'peak RSS MiB':>13}")
    for batch, frames in batches:
        first, median, peak, op_times = run_isolated(_case, (batch, frames, size, base_channels, steps, profile),
                                                     f"batch={batch}, frames={frames}")
        print(f"{batch:>5} {frames:>6} {first:>8.1f} {median:>7.2f} {batch * frames / median:>9.1f} {peak:>13.0f}")
        for line in format_op_times(op_times, top):
            print(line)


if __name__ == "__main__":
    CLI(main)
