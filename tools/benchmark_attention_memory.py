"""Benchmark: peak host memory and time of the CPU attention kernel's jitted gradient, by sequence length.

    python tools/benchmark_attention_memory.py --tokens "[2048, 4096, 8192]" --heads 8 --head_dim 64

Each length runs in a fresh process (spawn), so the peak RSS (ru_maxrss) is its own: `ms.jit(ms.grad(...))` of
`sum(attention(q, k, v) * r)` through `mg.backends.attention` (query chunks, hand-written backward) in the
plain path's (B, H, Dh, N) layout, batch 1. Prints the full score matrix's size (heads x N x N fp32), the peak RSS
over the process's RSS before the first call (compile included) and the median seconds of the calls after the
first. With `--chunk_scores` the chunk size (score elements at a time, `mg.backends.mha.CHUNK_SCORES`) is overridden, to
see what it buys.
"""
import resource
import time
from typing import List, Optional

from jsonargparse import CLI

from mg.isolated import run_isolated


def _case(tokens, heads, head_dim, chunk_scores, calls, queue):
    import mg  # noqa: F401  (quiet logging before mindspore loads)
    import mindspore as ms
    import numpy as np
    import psutil

    import mg.backends.mha as mha

    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_device("CPU")
    if chunk_scores:
        mha.CHUNK_SCORES = chunk_scores
    rng = np.random.default_rng(0)
    q, k, v, weights = (ms.Tensor(rng.standard_normal((1, heads, head_dim, tokens), dtype=np.float32))
                        for _ in range(4))

    def loss(q, k, v):
        return (mha.attention(q, k, v, None, head_dim) * weights).sum()

    grad = ms.jit(ms.grad(loss, grad_position=(0, 1, 2)))
    start_rss = psutil.Process().memory_info().rss / 2 ** 20
    times = []
    for _ in range(calls + 1):
        start = time.perf_counter()
        grad(q, k, v)[0].asnumpy()
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put((peak - start_rss, float(np.median(times[1:])), mha.CHUNK_SCORES))


def main(tokens: List[int] = (2048, 4096, 8192), heads: int = 8, head_dim: int = 64,
         chunk_scores: Optional[int] = None, calls: int = 2):
    """Print, per sequence length, the (heads, N, N) score matrix in MiB, the peak RSS over the start in MiB and the
    median s per gradient call (of `calls` after the first) of the jitted attention gradient."""
    print(f"attention gradient under ms.jit, batch 1, {heads} heads x {head_dim}; peak RSS over the start")
    print(f"{'tokens':>6} {'chunk':>7} {'scores MiB':>10} {'peak MiB':>9} {'s/call':>7}")
    for n in tokens:
        peak, seconds, chunk = run_isolated(_case, (n, heads, head_dim, chunk_scores, calls), f"tokens={n}")
        label = f"2^{chunk.bit_length() - 1}" if chunk & (chunk - 1) == 0 else str(chunk)
        print(f"{n:>6} {label:>7} {heads * n * n * 4 / 2 ** 20:>10.0f} {peak:>9.0f} {seconds:>7.2f}")


if __name__ == "__main__":
    CLI(main)
