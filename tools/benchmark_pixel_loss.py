"""Benchmark: what the pixel-space loss of post-training (mg.training.pixel_loss) costs. A compiled training step of
the toy transformer on a batch of videos, with and without the pixel term (the toy TAE's decoder, frozen, decodes
the clean-latent estimate; its backward reaches the transformer), each case in a fresh process: median step time
after the compile, and how far the process's resident memory rose above its level after building the models while
compiling and stepping (activations, gradients, the optimizer's moments, the graphs).

    python tools/benchmark_pixel_loss.py --batches "[1, 4]" [--window "[1, 4, 4]"] [--steps 5]
"""
import time
from typing import List, Optional, Tuple

import mg  # noqa: F401  (quiet logging before mindspore loads)
import numpy as np
from jsonargparse import CLI

from mg.isolated import run_isolated

CASES = ("latent loss", "latent + pixel loss")


def _case(pixel, batch, frames, window, steps, queue):
    import mindspore as ms

    from mg.models.dit import MovieGenDiT, dit_config
    from mg.models.tae import TemporalAutoencoder, tae_config
    from mg.optim import build_adamw
    from mg.profiling import peak_memory_growth
    from mg.schedulers import FlowMatching
    from mg.training.pixel_loss import PixelLossSettings, PixelSupervisedStep
    from mg.training.train_step import FlowMatchingTrainStep

    ms.set_context(mode=ms.GRAPH_MODE)
    config = dit_config("toy", in_channels=16, patch_size=(1, 2, 2), text_encoders={"ul2": 64, "metaclip": 64},
                        max_t=3, max_h=4, max_w=4)
    model = MovieGenDiT(config)
    optimizer = build_adamw(model.trainable_params(), lr=1e-4, weight_decay=0.0)
    flow = FlowMatching()
    rng = np.random.default_rng(0)
    latent_frames = 1 + (frames - 1) // 8
    x1 = ms.Tensor(rng.standard_normal((batch, 16, latent_frames, 8, 8)).astype(np.float32))
    embs = tuple(ms.Tensor(rng.standard_normal((batch, n, 64)).astype(np.float32)) for n in (40, 48))
    masks = tuple(ms.Tensor(np.ones((batch, n), np.float32)) for n in (40, 48))
    extra = ()
    if pixel:
        tae = TemporalAutoencoder(tae_config("small", base_channels=16, latent_channels=16))
        step = PixelSupervisedStep(model, optimizer, flow, tae, PixelLossSettings(weight=1.0, min_t=0.0, window=window))
        video = rng.uniform(-1, 1, (batch, 3, frames, 64, 64)).astype(np.float32)
        extra = step.targets({"video": video}, rng)
    else:
        step = FlowMatchingTrainStep(model, optimizer, flow)

    def one_step():
        x0 = ms.Tensor(flow.sample_noise(x1.shape, rng))
        t = ms.Tensor(flow.sample_t(batch, rng))
        start = time.perf_counter()
        step(x1, x0, t, embs, masks, *extra).asnumpy()
        return time.perf_counter() - start

    times, growth = peak_memory_growth(lambda: [one_step() for _ in range(steps + 1)])  # the first compiles
    queue.put((float(np.median(times[1:])), growth))


def main(batches: List[int] = (1, 4), frames: int = 17, window: Optional[Tuple[int, int, int]] = None,
         steps: int = 5):
    """Print, per batch size, the step time and the memory growth of each case and their ratios. `window`: the
    pixel loss's pixel_loss.window (latent frames, height, width; default: the whole latent)."""
    print(f"toy transformer, {frames}x64x64 videos, pixel loss window {window or 'whole'}; step time: median of "
          f"{steps} after the compile")
    for batch in batches:
        results = {case: run_isolated(_case, (case != CASES[0], batch, frames, window, steps),
                                      f"{case}, batch {batch}") for case in CASES}
        (base_time, base_mem), (pixel_time, pixel_mem) = results.values()
        for case, (seconds, growth) in results.items():
            print(f"  batch {batch:>2}  {case:<20} {1e3 * seconds:8.1f} ms/step   peak +{growth / 2**20:7.0f} MiB")
        print(f"  batch {batch:>2}  pixel / latent: time x{pixel_time / base_time:.2f}, "
              f"memory growth x{pixel_mem / max(base_mem, 1):.2f}")


if __name__ == "__main__":
    CLI(main)
