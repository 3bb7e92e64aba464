"""Benchmark: one EMA update of a transformer's weights (mg.training.ema: fp32 shadows on the device, one compiled
graph) against the same arithmetic in NumPy on host copies (what the EMA did before it moved to the device), median
of `repeats` updates after one to compile.

    python tools/benchmark_ema.py --models "[toy, d512x4]"
"""
import time
from typing import List

import mg  # noqa: F401  (quiet logging before mindspore loads)
import numpy as np
from jsonargparse import CLI
from mindspore.nn.utils import no_init_parameters

from mg.models.dit import MovieGenDiT, dit_config
from mg.parallel.deferred import materialize
from mg.training.ema import EMA

SIZES = {"toy": ("toy", {}), "d512x4": ("tiny", dict(depth=4, dim=512, ffn_dim=1408, num_heads=8))}


def _median_ms(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main(models: List[str] = ("toy", "d512x4"), repeats: int = 5):
    """Print, per model, its parameter count and the milliseconds of one update on the device and in NumPy."""
    for name in models:
        flavor, overrides = SIZES[name]
        with no_init_parameters():
            model = MovieGenDiT(dit_config(flavor, **overrides))
        materialize(model)
        params = model.trainable_params()
        ema = EMA(params, decay=0.999)
        steps = iter(range(1, 10 ** 6))
        ema.update(next(steps))  # compiles
        device = _median_ms(lambda: ema.update(next(steps)), repeats)
        shadows, values = [p.asnumpy().copy() for p in params], [p.asnumpy() for p in params]

        def numpy_update():
            for shadow, value in zip(shadows, values):
                shadow *= 0.999
                shadow += 0.001 * value

        host = _median_ms(numpy_update, repeats)
        count = sum(p.size for p in params) / 1e6
        print(f"{name}: {count:.1f}M parameters, device EMA update {device:.1f} ms, NumPy on the host {host:.1f} ms")


if __name__ == "__main__":
    CLI(main)
