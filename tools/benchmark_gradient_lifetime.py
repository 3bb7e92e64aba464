"""Benchmark: how long a micro-batch's whole gradients exist under ZeRO-2 before they become this rank's slices.

MindSpore's `value_and_grad` returns every gradient at the end of the backward; ZeRO-2 (mg.parallel.zero) then
reduce-scatters them into the rank's 1/dp slices, which are what gradient accumulation keeps. Per micro-batch this
prints the forward + backward time (whole gradients appear during the backward and all exist at its end), the
reduce-scatter time (until which they all exist), their bytes and the slices' bytes. Run under msrun:

    msrun --worker_num=2 --local_worker_num=2 --master_port=8119 --join=True \\
        tools/benchmark_gradient_lifetime.py --dim 512 --depth 4 --tokens 1024
"""
import time

import mg  # noqa: F401  (quiet logging before mindspore loads)
import mindspore as ms
import numpy as np
from jsonargparse import CLI

from mg.models.dit import dit_config
from mg.parallel.groups import init_parallel
from mg.parallel.zero import ParallelAdamW
from mg.schedulers import FlowMatching
from mg.training.dit_init import build_dit


def main(dim: int = 512, depth: int = 4, tokens: int = 1024, text_tokens: int = 64, repeats: int = 3):
    """Median over `repeats` micro-batches (after one warm-up) of one sample of `tokens` tokens per rank."""
    ms.set_context(mode=ms.PYNATIVE_MODE)
    groups = init_parallel()
    config = dit_config("tiny", depth=depth, dim=dim, ffn_dim=dim * 11 // 4, num_heads=dim // 64,
                        text_encoders={"ul2": 64}, max_t=1, max_h=64, max_w=64)
    model = build_dit(config, 0, groups, zero_stage=2)
    optimizer = ParallelAdamW(model, lr=1e-4)
    flow = FlowMatching()
    grad_fn = ms.value_and_grad(lambda *a: flow.loss(model, *a), None, optimizer.parameters)
    side = int(round((tokens * 4) ** 0.5))  # latent grid: tokens = (side / 2) ** 2 with patch 1 x 2 x 2
    rng = np.random.default_rng(groups.dp_rank)
    x1, x0 = (ms.Tensor(rng.standard_normal((1, config.in_channels, 1, side, side), dtype=np.float32))
              for _ in range(2))
    t = ms.Tensor(np.array([0.5], np.float32))
    text = (ms.Tensor(rng.standard_normal((1, text_tokens, 64), dtype=np.float32)),)
    mask = (ms.Tensor(np.ones((1, text_tokens), np.float32)),)
    backward, scatter = [], []
    for i in range(repeats + 1):
        start = time.perf_counter()
        _, grads = grad_fn(x1, x0, t, text, mask)
        grads[-1].asnumpy()
        middle = time.perf_counter()
        slices = optimizer.reduce_gradients(grads)
        slices[-1].asnumpy()
        end = time.perf_counter()
        if i:
            backward.append(middle - start)
            scatter.append(end - middle)
    whole = sum(g.nbytes for g in grads)
    sliced = sum(s.nbytes for s in slices)
    if groups.rank == 0:
        print(f"d{dim} x {depth}, {tokens} tokens, dp{groups.dp} ZeRO-2: whole gradients {whole / 2 ** 20:.1f} MiB, "
              f"slices {sliced / 2 ** 20:.1f} MiB; forward + backward {np.median(backward):.3f} s, reduce-scatter "
              f"{np.median(scatter):.3f} s (whole gradients exist for at most the backward plus this)")


if __name__ == "__main__":
    CLI(main)
