"""The memory plan (mg/parallel/memory.py) against what a real training step allocates, on this device.

`check_plan` builds the model, optimizer and train step of a configuration for this process's layout (under msrun:
the current groups), counts the bytes of the tensors they hold, runs one step and measures how far this process's
resident memory rises during it. Weights, gradients, optimizer state and accumulation buffers must equal the plan
exactly, and so must the EMA's shadows; the step's rise minus its gradients is the measured activation memory. Run it in a fresh process (or first
in one): MindSpore keeps the memory a step used in its pool, so a second step in the same process rises by nothing.
"""
import mindspore as ms
import numpy as np

from mg.backends import apply_recompute
from mg.models.dit import MovieGenDiT
from mg.optim import build_adamw
from mg.parallel import ParallelAdamW, parallelize
from mg.parallel.memory import Layout, plan_memory
from mg.profiling import peak_memory_growth
from mg.schedulers import FlowMatching
from mg.training.ema import EMA
from mg.training.state_io import LocalState, ParallelState
from mg.training.train_step import FlowMatchingTrainStep


def _bytes(tensors):
    return sum(int(t.nbytes) for t in tensors)


def check_plan(config, layout: Layout, workload, groups=None, seed=0):
    """{"planned": MemoryPlan, "allocated": {part: bytes}, "measured_activations": bytes} for one step on this
    rank. `groups`: the ParallelGroups of `layout` (None: one process). PyNative; batches of random latents with
    `workload.text_tokens` text tokens from one encoder, which must be `config`'s only one."""
    (kind, width), = config.text_encoders.items()
    model = MovieGenDiT(config)
    if groups is not None:
        parallelize(model, groups, sp=layout.sp, zero_stage=layout.zero_stage)
        optimizer = ParallelAdamW(model, lr=1e-4)
    else:
        optimizer = build_adamw(model.trainable_params(), lr=1e-4, weight_decay=0.0)
    apply_recompute(model, workload.recompute_every, compiled=False)
    step = FlowMatchingTrainStep(model, optimizer, FlowMatching(), jit=False, accumulation_steps=workload.accumulation)
    state = LocalState(model, optimizer) if groups is None else ParallelState(model, optimizer, groups)
    targets, names, _ = state.ema_targets()
    ema = EMA(targets, names=names) if workload.ema else None
    own = {id(p) for p in model.trainable_params()}
    allocated = {"weights": _bytes(model.trainable_params()),
                 "optimizer": _bytes(p for p in optimizer.get_parameters() if id(p) not in own),
                 "accumulation": _bytes(step.accumulated) if workload.accumulation > 1 else 0,
                 "ema": _bytes(ema.shadows) if ema is not None else 0}

    rng = np.random.default_rng(seed)
    tokens_shape = (workload.batch, config.in_channels, -(-workload.frames // 8), workload.height // 8,
                    workload.width // 8)
    x1, x0 = (ms.Tensor(rng.standard_normal(tokens_shape, dtype=np.float32)) for _ in range(2))
    t = ms.Tensor(rng.uniform(0.1, 0.9, workload.batch).astype(np.float32))
    embs = (ms.Tensor(rng.standard_normal((workload.batch, workload.text_tokens, width), dtype=np.float32)),)
    masks = (ms.Tensor(np.ones((workload.batch, workload.text_tokens), np.float32)),)
    _, growth = peak_memory_growth(lambda: step(x1, x0, t, embs, masks).asnumpy())
    _, grads = step.grad_fn(x1, x0, t, ms.mutable(embs), ms.mutable(masks))
    allocated["gradients"] = _bytes(grads)
    return {"planned": plan_memory(config, layout, workload), "allocated": allocated,
            "measured_activations": growth - allocated["gradients"]}
