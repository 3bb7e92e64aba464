"""Benchmark: communication volume of one training step (forward, backward, ParallelAdamW update) per parallel layout.

Run under msrun with as many workers as every layout's dp * tp * cp; rank 0 prints, per layout, the calls and MiB of
each collective kind as counted by `mg.parallel.collectives.METER` (the tensor size of the collective, and what one
rank sends with a ring algorithm). Counts are per rank and per step; they depend on the model and the token count,
not on the machine.

    msrun --worker_num=4 --local_worker_num=4 --master_port=8118 --join=True \\
        tools/benchmark_comm_volume.py --layouts '[d4, d4z1, d4z2, d4z3, t4, t4s, c4, d2t2s, c2t2s]'

A layout name is d<dp>t<tp>c<cp> in any order with missing factors 1, "s" for sequence parallelism and z<stage>.
"""
import re

import mg  # noqa: F401  (quiet logging before mindspore loads)
import mindspore as ms
import numpy as np
from jsonargparse import CLI

from mg.models.dit import MovieGenDiT, dit_config
from mg.parallel.collectives import METER
from mg.parallel.groups import init_parallel
from mg.parallel.parallelize import parallelize
from mg.parallel.zero import ParallelAdamW
from mg.schedulers import FlowMatching

LAYOUT = re.compile(r"(d\d+|t\d+|c\d+|s|z\d)+")


def parse_layout(name):
    if not LAYOUT.fullmatch(name):
        raise ValueError(f"layout {name!r} is not of the form d<dp>t<tp>c<cp>[s][z<stage>], e.g. d2t2s or d4z3")
    parts = {k: int(v) for k, v in re.findall(r"([dtcz])(\d+)", name)}
    return dict(dp=parts.get("d", 1), tp=parts.get("t", 1), cp=parts.get("c", 1), sp="s" in name,
                zero_stage=parts.get("z", 0))


def main(layouts: list = ("d4", "d4z1", "d4z2", "d4z3", "t4", "t4s", "c4", "d2t2s", "c2t2s"), preset: str = "toy",
         frames: int = 4, height: int = 16, width: int = 16, text_tokens: int = 32, batch_per_dp_rank: int = 1):
    """One measured step per layout on latents (B, 16, frames, height, width) (patch 1x2x2) of the `preset` model."""
    ms.set_context(mode=ms.PYNATIVE_MODE)
    config = dit_config(preset, text_encoders={"ul2": 64})
    tokens = frames * (height // 2) * (width // 2)
    rows = []
    for name in layouts:
        layout = parse_layout(name)
        groups = init_parallel(dp=layout["dp"], tp=layout["tp"], cp=layout["cp"])
        rng = np.random.default_rng(0)
        model = MovieGenDiT(config)
        parallelize(model, groups, sp=layout["sp"], zero_stage=layout["zero_stage"])
        optimizer = ParallelAdamW(model, lr=1e-4)
        b = batch_per_dp_rank
        x1 = ms.Tensor(rng.standard_normal((b, config.in_channels, frames, height, width)).astype(np.float32))
        x0 = ms.Tensor(rng.standard_normal(x1.shape).astype(np.float32))
        t = ms.Tensor(rng.uniform(size=b).astype(np.float32))
        text = (ms.Tensor(rng.standard_normal((b, text_tokens, 64)).astype(np.float32)),)
        mask = (ms.Tensor(np.ones((b, text_tokens), np.float32)),)
        flow = FlowMatching()
        grad_fn = ms.value_and_grad(lambda *a: flow.loss(model, *a), None, optimizer.parameters)
        METER.reset()
        METER.enabled = True
        _, grads = grad_fn(x1, x0, t, text, mask)
        optimizer(grads)
        METER.enabled = False
        rows.append((name, METER.summary()))
    if groups.rank == 0:
        params = sum(int(np.prod(p.shape)) for p in MovieGenDiT(config).trainable_params())
        print(f"model {preset}: {params / 1e6:.1f} M parameters ({4 * params / 2**20:.1f} MiB fp32); "
              f"{tokens} video tokens, {text_tokens} text tokens, {batch_per_dp_rank} sample(s) per dp rank")
        print(f"{'layout':<8} {'collective':<15} {'calls':>6} {'tensor MiB':>11} {'ring MiB sent/rank':>19}")
        for name, summary in rows:
            for kind, counts in summary.items():
                print(f"{name:<8} {kind:<15} {counts['calls']:>6} {counts['bytes'] / 2**20:>11.2f} "
                      f"{counts['wire_bytes'] / 2**20:>19.2f}")
            total = sum(c["wire_bytes"] for c in summary.values()) / 2**20
            print(f"{name:<8} {'total':<15} {'':>6} {'':>11} {total:>19.2f}")


if __name__ == "__main__":
    CLI(main)
