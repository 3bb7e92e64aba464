"""Model checks run inside msrun workers: a parallel layout of a tiny MovieGenDiT against the single-process model
(computed on every rank, no communication): forward output, loss, every gradient (gathered), the weights and AdamW
state after one step; plus training, sampling and checkpoint checks. Each returns {check name: max abs error}."""
import functools
import math

import mindspore as ms
import numpy as np
from mindspore import ops

from mg.backends import apply_recompute
from mg.io import load_checkpoint, load_state_dict, save_checkpoint, state_dict
from mg.models.dit import MovieGenDiT, dit_config
from mg.parallel.checkpoint import (full_arrays, gather_optimizer_state, gather_state_dict,
                                    load_gathered_optimizer_state, load_gathered_state_dict)
from mg.parallel.collectives import METER
from mg.parallel.groups import init_parallel
from mg.parallel.memory import Layout, Workload
from mg.parallel.parallelize import parallelize
from mg.parallel.zero import ParallelAdamW
from mg.schedulers import EulerSampler, FlowMatching
from mg.optim import build_adamw, optimizer_state
from mg.training.memory_check import check_plan
from mg.training.train_step import FlowMatchingTrainStep

TEXT_DIMS = {"ul2": 12, "byt5": 8}
# Adam's update is lr * m / (sqrt(v) + eps): a gradient element near eps turns float rounding d into a weight
# difference of about lr * d / eps. On an AVX2 machine the two-step dp2 run differed from one process by 1.1e-5
# (t_modulation.weight) with eps = 1e-6 and by 1.8e-6 with eps = 1e-4, which is still far below the typical
# gradient element here.
ADAMW = dict(lr=1e-2, weight_decay=0.1, eps=1e-4)
CLIP = 4.0  # global-norm clipping in every layout check: the test batches' gradient norms are 10-16
PER_RANK_BATCH = 2


def tiny_config(**overrides):
    return dit_config("tiny", depth=2, dim=32, ffn_dim=48, num_heads=4, in_channels=4, text_encoders=dict(TEXT_DIMS),
                      max_t=4, max_h=6, max_w=6, **overrides)


def gather_gradients(optimizer, grads):
    """Single-process gradient arrays from `ParallelAdamW.reduce_gradients` output (collective)."""
    items = [(g, info, optimizer.slice_state or info.zero3) for g, info in zip(grads, optimizer.infos)]
    return {p.name: array for p, array in zip(optimizer.parameters, full_arrays(items, optimizer.groups))}


# LinGen's MATE in every block (runs under DP and ZeRO)
MATE_MODEL = dict(attention="mate", mate_head_dim=8, mate_state_dim=4, mate_window=(2, 2, 2))


def reference_weights(seed=0, **overrides):
    """Random values for every parameter (zero-initialised ones too, so every gradient is non-trivial)."""
    model = MovieGenDiT(tiny_config(**overrides))
    rng = np.random.default_rng(seed)
    return {p.name: rng.normal(0, 0.2, p.shape).astype(np.float32) for p in model.trainable_params()}


def make_model(weights, **overrides):
    model = MovieGenDiT(tiny_config(**overrides))
    load_state_dict(model, weights)
    return model


def make_batch(batch, seed=1):
    """x1, x0, t and text for `batch` samples; latents (B, 4, 2, 4, 4) = 8 tokens."""
    rng = np.random.default_rng(seed)
    x1 = rng.standard_normal((batch, 4, 2, 4, 4)).astype(np.float32)
    x0 = rng.standard_normal(x1.shape).astype(np.float32)
    t = rng.uniform(0.05, 0.95, batch).astype(np.float32)
    embs, masks = [], []
    for i, dim in enumerate(TEXT_DIMS.values()):
        embs.append(rng.standard_normal((batch, 5 + i, dim)).astype(np.float32))
        mask = np.ones((batch, 5 + i), np.float32)
        mask[0, 3:] = 0
        masks.append(mask)
    return x1, x0, t, embs, masks


def _tensors(x1, x0, t, embs, masks, rows=slice(None)):
    return (ms.Tensor(x1[rows]), ms.Tensor(x0[rows]), ms.Tensor(t[rows]), tuple(ms.Tensor(e[rows]) for e in embs),
            tuple(ms.Tensor(m[rows]) for m in masks))


def _max_err(got, want):
    return float(np.abs(np.asarray(got) - np.asarray(want)).max())


WORST = {}  # check name -> the array name with the largest error (shown when a check fails)


def _dict_err(got, want, check):
    """Largest error over the arrays of two name -> array dicts (inf when the names differ)."""
    if set(got) != set(want):
        WORST[check] = f"names differ: {sorted(set(got) ^ set(want))[:5]}"
        return float("inf")
    errors = {k: _max_err(got[k], want[k]) for k in want}
    WORST[check] = max(errors, key=errors.get)
    return errors[WORST[check]]


def _loss_and_grads(model, params, flow, inputs):
    fn = ms.value_and_grad(lambda *a: flow.loss(model, *a), None, params)
    return fn(*inputs)


@functools.lru_cache(maxsize=None)
def single_process_step(batch_size, **overrides):
    """The single-process model on the global batch: output, loss, gradients, weights and AdamW state after a step
    with the gradients clipped to global norm CLIP."""
    flow = FlowMatching()
    full = _tensors(*make_batch(batch_size))
    ref = make_model(reference_weights(**overrides), **overrides)
    ref_opt = build_adamw(ref.trainable_params(), **ADAMW)
    out = ref(flow.interpolate(full[1], full[0], full[2]), full[2], full[3], full[4]).asnumpy()
    loss, grads = _loss_and_grads(ref, ref_opt.parameters, flow, full)
    clipped = ops.clip_by_global_norm(grads, CLIP)
    grads = {p.name: g.asnumpy() for p, g in zip(ref_opt.parameters, grads)}
    ref_opt(clipped)
    return out, float(loss.asnumpy()), grads, state_dict(ref), optimizer_state(ref_opt)


def check_layout(name, dp, tp, cp, sp=False, zero_stage=0, checkpoint_dir=None, **overrides):
    """One training step (gradients clipped to global norm CLIP) of the layout against the single-process model on
    the global batch (then, with `checkpoint_dir`, its checkpoint moved to one process and back); `overrides`: model
    configuration changes (MATE_MODEL)."""
    groups = init_parallel(dp=dp, tp=tp, cp=cp)
    flow, weights = FlowMatching(), reference_weights(**overrides)
    batch = make_batch(PER_RANK_BATCH * dp)
    out_ref, loss_ref, grads_ref, weights_ref, adamw_ref = single_process_step(PER_RANK_BATCH * dp, **overrides)
    model = make_model(weights, **overrides)
    parallelize(model, groups, sp=sp, zero_stage=zero_stage)
    opt = ParallelAdamW(model, **ADAMW, clip_grad_norm=CLIP)
    rows = slice(groups.dp_rank * PER_RANK_BATCH, (groups.dp_rank + 1) * PER_RANK_BATCH)
    local = _tensors(*batch, rows=rows)
    out = model(flow.interpolate(local[1], local[0], local[2]), local[2], local[3], local[4]).asnumpy()
    loss, grads = _loss_and_grads(model, opt.parameters, flow, local)
    mean_loss = groups.comm("dp").all_reduce(loss.reshape(1)).asnumpy()[0] / dp
    grads_full = gather_gradients(opt, opt.reduce_gradients(grads))
    opt(grads)
    prefix = f"model/{name}"
    results = {} if checkpoint_dir is None else _checkpoint_round_trip(name, model, opt, sp, zero_stage, local,
                                                                        checkpoint_dir)
    return {**results, f"{prefix}/forward": _max_err(out, out_ref[rows]),
            f"{prefix}/loss": _max_err(mean_loss, loss_ref),
            f"{prefix}/gradients": _dict_err(grads_full, grads_ref, f"{prefix}/gradients"),
            f"{prefix}/weights_after_adamw": _dict_err(gather_state_dict(model), weights_ref,
                                                       f"{prefix}/weights_after_adamw"),
            f"{prefix}/adamw_state": _dict_err(gather_optimizer_state(opt), adamw_ref, f"{prefix}/adamw_state")}


def check_training_run(name, dp, steps=2, zero_stage=1):
    """`steps` FlowMatchingTrainStep updates under dp ranks against one process with dp times the batch; t and noise
    come from the generator seeded (seed, step, data-parallel rank), as in the trainer, and the data from this rank's
    rows."""
    groups = init_parallel(dp=dp)
    flow, weights = FlowMatching(), reference_weights()
    ref = make_model(weights)
    ref_step = FlowMatchingTrainStep(ref, build_adamw(ref.trainable_params(), **ADAMW), flow, jit=False)
    model = make_model(weights)
    parallelize(model, groups, zero_stage=zero_stage)
    step = FlowMatchingTrainStep(model, ParallelAdamW(model, **ADAMW), flow, jit=False)
    err = 0.0
    for i in range(steps):
        x1, _, _, embs, masks = make_batch(PER_RANK_BATCH * dp, seed=10 + i)
        # each data-parallel rank draws t and noise for its own samples; the reference concatenates them
        draws = []
        for r in range(dp):
            rng = np.random.default_rng([7, i, r])
            draws.append((flow.sample_noise((PER_RANK_BATCH,) + x1.shape[1:], rng), flow.sample_t(PER_RANK_BATCH, rng)))
        x0, t = np.concatenate([d[0] for d in draws]), np.concatenate([d[1] for d in draws])
        loss_ref = float(ref_step(*_tensors(x1, x0, t, embs, masks)).asnumpy())
        rows = slice(groups.dp_rank * PER_RANK_BATCH, (groups.dp_rank + 1) * PER_RANK_BATCH)
        loss = step(*_tensors(x1, x0, t, embs, masks, rows=rows))
        mean_loss = groups.comm("dp").all_reduce(loss.reshape(1)).asnumpy()[0] / dp
        err = max(err, abs(mean_loss - loss_ref))
    return {f"train/{name}/losses": err,
            f"train/{name}/weights": _dict_err(gather_state_dict(model), state_dict(ref), f"train/{name}/weights")}


def check_sampling(name, tp, cp, sp):
    """Euler sampling with CFG through the parallel model gives the single-process video."""
    groups = init_parallel(dp=1, tp=tp, cp=cp)
    weights = reference_weights()
    x1, x0, _, embs, masks = make_batch(2)
    cond = (tuple(ms.Tensor(e) for e in embs), tuple(ms.Tensor(m) for m in masks))
    uncond = (tuple(ms.Tensor(np.zeros_like(e)) for e in embs), tuple(ms.Tensor(m) for m in masks))
    sampler = EulerSampler(num_steps=2, schedule="linear", guidance_scale=5.0)
    want = sampler.sample(make_model(weights), ms.Tensor(x0), cond, uncond).asnumpy()
    model = make_model(weights)
    parallelize(model, groups, sp=sp)
    got = sampler.sample(model, ms.Tensor(x0), cond, uncond).asnumpy()
    return {f"sample/{name}": _max_err(got, want)}


def _checkpoint_round_trip(name, model, opt, sp, zero_stage, local, tmp_dir):
    """Weights and AdamW state of a layout, saved by rank 0, load into one process (same output) and back into a
    fresh model of the layout (same output, same gathered AdamW state)."""
    groups, flow = model.parallel_plan.groups, FlowMatching()
    tensors = {f"model/{k}": v for k, v in gather_state_dict(model).items()}
    tensors.update({f"optimizer/{k}": v for k, v in gather_optimizer_state(opt).items()})
    stem = f"{tmp_dir}/{name}"
    if groups.rank == 0:
        save_checkpoint(stem, tensors, {"layout": name})
    groups.comm("world").all_reduce(ms.Tensor(np.zeros(1, np.float32))).asnumpy()  # barrier: the file exists
    loaded, _ = load_checkpoint(stem)
    model_state = {k[6:]: v for k, v in loaded.items() if k.startswith("model/")}
    opt_state = {k[10:]: v for k, v in loaded.items() if k.startswith("optimizer/")}
    x_t = flow.interpolate(local[1], local[0], local[2])
    want = make_model(model_state)(x_t, *local[2:]).asnumpy()
    got = model(x_t, *local[2:]).asnumpy()
    back = make_model(reference_weights(seed=5))
    parallelize(back, groups, sp=sp, zero_stage=zero_stage)
    back_opt = ParallelAdamW(back, **ADAMW)
    load_gathered_state_dict(back, model_state, back_opt)
    load_gathered_optimizer_state(back_opt, opt_state)
    return {f"ckpt/{name}/single_process_forward": _max_err(got, want),
            f"ckpt/{name}/reloaded_forward": _max_err(back(x_t, *local[2:]).asnumpy(), want),
            f"ckpt/{name}/reloaded_adamw_state": _dict_err(gather_optimizer_state(back_opt), opt_state,
                                                           f"ckpt/{name}/reloaded_adamw_state")}


def check_jit_step(name, dp, tp, zero_stage=0, recompute=False):
    """One FlowMatchingTrainStep compiled with ms.jit (collectives and ParallelAdamW inside the graph) against the
    single-process step (PyNative, no recompute) on the global batch; `recompute`: every block checkpointed."""
    groups = init_parallel(dp=dp, tp=tp)
    flow, weights = FlowMatching(), reference_weights()
    _, _, _, weights_ref, _ = single_process_step(PER_RANK_BATCH * dp)
    model = make_model(weights)
    parallelize(model, groups, zero_stage=zero_stage)
    apply_recompute(model, int(recompute), compiled=True)
    step = FlowMatchingTrainStep(model, ParallelAdamW(model, **ADAMW, clip_grad_norm=CLIP), flow, jit=True)
    rows = slice(groups.dp_rank * PER_RANK_BATCH, (groups.dp_rank + 1) * PER_RANK_BATCH)
    step(*_tensors(*make_batch(PER_RANK_BATCH * dp), rows=rows))
    return {f"jit/{name}/weights_after_adamw": _dict_err(gather_state_dict(model), weights_ref,
                                                         f"jit/{name}/weights_after_adamw")}


def check_comm_volume():
    """The byte meter against closed forms for dp=2: stage 0 all-reduces every fp32 gradient once (one bucket);
    stage 2 reduce-scatters them, each zero-padded to an even length."""
    groups = init_parallel(dp=2)
    weights = reference_weights()
    sizes = [w.size for w in weights.values()]
    expected = {0: {"all_reduce": {"calls": 1, "bytes": 4 * sum(sizes)}},
                2: {"reduce_scatter": {"calls": 1, "bytes": 4 * sum(2 * math.ceil(n / 2) for n in sizes)}}}
    results = {}
    for stage, want in expected.items():
        model = make_model(weights)
        parallelize(model, groups, zero_stage=stage)
        opt = ParallelAdamW(model, **ADAMW)
        grads = [ms.Tensor(np.ones(p.shape, np.float32)) for p in opt.parameters]  # the bytes do not depend on values
        METER.reset()
        METER.enabled = True
        opt.reduce_gradients(grads)
        METER.enabled = False
        got = {kind: {"calls": c["calls"], "bytes": c["bytes"]} for kind, c in METER.summary().items()}
        results[f"meter/dp2_zero{stage}"] = 0.0 if got == want else float("inf")
        WORST[f"meter/dp2_zero{stage}"] = f"counted {got}, expected {want}"
    return results


PLAN_MODEL = dict(depth=2, dim=512, ffn_dim=1408, num_heads=8, text_encoders={"ul2": 64}, max_t=1, max_h=16, max_w=32)
ACTIVATION_TOLERANCE = 0.25  # the plan's activations against a step's measured memory rise (relative)


PLAN_PARTS = ("weights", "gradients", "optimizer", "accumulation", "ema")


def check_memory_plan(name, dp, tp, cp, sp=False, zero_stage=0, measure=False):
    """The memory plan of a d=512 model with gradient accumulation: its weights, gradients, optimizer state and
    accumulation buffers equal the bytes this rank holds (error in bytes); with `measure` (the first step of the
    process: MindSpore's pool keeps what a step used), its activations at 512 tokens per sample, batch 4 per rank, are
    within ACTIVATION_TOLERANCE of the measured rise (error: how far outside)."""
    groups = init_parallel(dp=dp, tp=tp, cp=cp)
    layout = Layout(dp, tp, cp, sp, zero_stage)
    size = (4, 1, 256, 512) if measure else (1, 1, 64, 64)  # (batch, frames, height, width): small if not measured
    workload = Workload(*size, 64, accumulation=2, recompute_every=0, compiled=False)
    result = check_plan(dit_config("tiny", **PLAN_MODEL), layout, workload, groups)
    plan, got = result["planned"], result["allocated"]
    errors = {f"plan/{name}/{part}": float(abs(getattr(plan, part) - got[part])) for part in PLAN_PARTS}
    for part in PLAN_PARTS:
        WORST[f"plan/{name}/{part}"] = f"planned {getattr(plan, part)}, allocated {got[part]}"
    if measure:
        relative = abs(plan.activations / result["measured_activations"] - 1)
        errors[f"plan/{name}/activations"] = max(0.0, relative - ACTIVATION_TOLERANCE)
        WORST[f"plan/{name}/activations"] = (f"planned {plan.activations / 2 ** 20:.0f} MiB, measured "
                                             f"{result['measured_activations'] / 2 ** 20:.0f} MiB")
    return errors
