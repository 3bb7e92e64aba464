"""Data-parallel AdamW with ZeRO stages 0-3, used in place of `mg.optim.AdamW` on a parallelized model.

It takes the raw gradients of this rank and does all the reduction itself:
  1. sums over the extra group each parameter needs (CP / SP shards of the tokens, see `ParallelPlan`);
  2. averages over data-parallel ranks: stage 0 all-reduce; stages 1 and 2 reduce-scatter, so each rank receives
     only the 1/dp flat slice whose optimizer state it owns (the same bytes as an all-reduce once the updated slices
     are all-gathered); stage 3 the same, and the ZeRO-3 projection weights arrive already summed (their all-gather's
     backward is a reduce-scatter);
  3. optional clipping by the global norm (counted once across shards and replicas);
  4. AdamW on the slices (moments exist only for this rank's slice when stage >= 1);
  5. stages 1-2: all-gather the updated slices back into the full parameters (ZeRO-3 weights stay sliced).
Stage 2 differs from stage 1 in what a training step accumulates (`shards_gradients`): with gradient accumulation
every micro-batch's gradients are reduce-scattered into this rank's slices as soon as the backward returns them and
the slices are accumulated, so the accumulation buffers are 1/dp of the model; stage 1 accumulates whole gradients
and reduces once per update. MindSpore's value_and_grad returns every gradient whole at the end of the backward, so
whole gradients still exist from the end of each backward until the reduce-scatter (docs/parallel.md).

Use it as `FlowMatchingTrainStep(model, ParallelAdamW(...), flow, clip_grad_norm=0)`: clipping belongs here,
because only here the gradient is the global one.
"""
from __future__ import annotations

from collections import namedtuple

import mindspore as ms
from mindspore import Parameter, ParameterTuple, Tensor, mint, nn, ops

from mg.parallel.layers import flat_shard_length, shard_flat
from mg.optim import AdamW, is_no_decay

_Named = namedtuple("_Named", "name shape")  # what `is_no_decay` reads, with the single-process shape


class ParallelAdamW(nn.Cell):
    def __init__(self, model, lr: float, weight_decay: float = 0.0, betas=(0.9, 0.999), eps: float = 1e-8,
                 clip_grad_norm: float = 0.0):
        super().__init__(auto_prefix=False)  # keep the model's parameter names (as TrainOneStepCell does)
        plan = getattr(model, "parallel_plan", None)
        if plan is None:
            raise ValueError("ParallelAdamW needs a model returned by mg.parallel.parallelize")
        if weight_decay < 0 or clip_grad_norm < 0:
            raise ValueError(f"weight_decay and clip_grad_norm must be >= 0, got {weight_decay}, {clip_grad_norm}")
        self.plan, self.groups = plan, plan.groups
        self.stage, self.clip = plan.zero_stage, float(clip_grad_norm)
        params = list(model.trainable_params())
        if [p.name for p in params] != list(plan.params):
            raise ValueError("the model's trainable parameters do not match its parallel plan")
        self.parameters = ParameterTuple(params)
        self.infos = [plan.params[p.name] for p in params]
        dp = self.groups.comm("dp")
        self.dp_size, self.dp_index = dp.size, dp.index
        self.slice_state = self.stage >= 1 and dp.size > 1
        self.shards_gradients = self.stage == 2 and dp.size > 1
        slices = []
        for p, info in zip(params, self.infos):
            if self.slice_state and not info.zero3:
                flat = shard_flat(p.asnumpy(), dp.index, dp.size)
                slices.append(Parameter(Tensor(flat), name=f"zero_slice.{p.name}"))
            else:
                slices.append(p)
        decays = [not is_no_decay(_Named(p.name, info.full_shape)) for p, info in zip(params, self.infos)]
        decay = [i for i, d in enumerate(decays) if d]
        no_decay = [i for i, d in enumerate(decays) if not d]
        self.inner_order = tuple(decay + no_decay)  # AdamW flattens its groups in order
        groups = [{"params": [slices[i] for i in idx], "weight_decay": wd}
                  for idx, wd in ((decay, weight_decay), (no_decay, 0.0)) if idx]
        self.inner = AdamW(groups, learning_rate=lr, betas=betas, eps=eps)
        self.slices = ParameterTuple(slices)
        self.comms = {kind: self.groups.comm(kind) for kind in ("dp", "cp", "seq", "world")}
        # Replication weights of each parameter's reduced gradient, so the global norm counts every value once.
        tp = self.groups.tp
        self.norm_weights = tuple(
            (1.0 if info.tp_mode is not None else 1.0 / tp) / self.groups.cp
            * (1.0 if (self.slice_state or info.zero3) else 1.0 / dp.size) for info in self.infos)

    # ---- what the training loop uses, like nn.Optimizer ------------------------------------------------------------
    @property
    def learning_rate(self):
        return self.inner.learning_rate

    @property
    def is_group_lr(self):
        return self.inner.is_group_lr

    @property
    def global_step(self):
        return self.inner.global_step

    # ---- gradient reduction -------------------------------------------------------------------------------------
    def _all_reduce_bucket(self, comm, grads, indices):
        """One all-reduce for several gradients (flattened and concatenated)."""
        if comm.size == 1 or not indices:
            return grads
        flat = comm.all_reduce(mint.cat([grads[i].reshape(-1) for i in indices]))
        out, offset = list(grads), 0
        for i in indices:
            n = grads[i].size
            out[i] = flat[offset:offset + n].reshape(grads[i].shape)
            offset += n
        return out

    def _reduce_scatter_bucket(self, comm, grads, indices):
        """Each gradient as (dp, L_i) slices; one reduce-scatter of their concatenation gives every rank its own."""
        if not indices:
            return grads
        rows = [_as_slices(grads[i], comm.size) for i in indices]
        mine = comm.reduce_scatter(mint.cat(rows, dim=1), 0).reshape(-1)
        out, offset = list(grads), 0
        for i, row in zip(indices, rows):
            out[i] = mine[offset:offset + row.shape[1]]
            offset += row.shape[1]
        return out

    def reduce_gradients(self, grads):
        """Raw gradients of this rank -> the averaged gradients of what this rank updates (full local pieces for
        stage 0, flat slices for stages >= 1 when dp > 1)."""
        grads = list(grads)
        for kind in ("cp", "seq"):
            grads = self._all_reduce_bucket(self.comms[kind], grads,
                                            [i for i, info in enumerate(self.infos) if info.reduce_group == kind])
        if self.dp_size > 1:
            dense = [i for i, info in enumerate(self.infos) if not info.zero3]
            if self.stage >= 1:
                grads = self._reduce_scatter_bucket(self.comms["dp"], grads, dense)
            else:
                grads = self._all_reduce_bucket(self.comms["dp"], grads, dense)
            grads = [g / self.dp_size for g in grads]
        return grads

    def _clip(self, grads):
        local = mint.zeros((1,), dtype=ms.float32)
        for g, w in zip(grads, self.norm_weights):
            local = local + w * mint.sum(mint.square(g.astype(ms.float32))).reshape(1)
        norm = mint.sqrt(self.comms["world"].all_reduce(local))
        scale = self.clip / mint.maximum(norm, Tensor([self.clip], ms.float32))
        return [g * scale.astype(g.dtype) for g in grads]

    # ---- the update ---------------------------------------------------------------------------------------------
    def gradient_shapes(self):
        """Shapes of what `reduce_gradients` returns, in parameter order."""
        return [(flat_shard_length(p.size, self.dp_size),) if self.slice_state and not info.zero3 else tuple(p.shape)
                for p, info in zip(self.parameters, self.infos)]

    def construct(self, grads):
        return self.apply_reduced(self.reduce_gradients(grads))

    def apply_reduced(self, grads):
        """The update from gradients `reduce_gradients` already reduced."""
        if self.clip > 0:
            grads = self._clip(grads)
        done = self.inner(tuple(grads[i] for i in self.inner_order))
        if self.slice_state:
            return ops.depend(self.gather_slices(), done)
        return done

    def gather_slices(self):
        """All-gather the updated slices into the full parameters (one bucket)."""
        dense = [i for i, info in enumerate(self.infos) if not info.zero3]
        comm = self.comms["dp"]
        gathered = comm.all_gather(mint.cat([self.slices[i].reshape(1, -1) for i in dense], dim=1), 0)
        offset = 0
        for i in dense:
            param, length = self.parameters[i], self.slices[i].shape[0]
            full = gathered[:, offset:offset + length].reshape(-1)[:param.size].reshape(param.shape)
            param.copy_(full)
            offset += length
        return True

    def refresh_slices(self):
        """Copy the current parameters into this rank's slices (after loading weights into the model)."""
        if not self.slice_state:
            return
        for param, piece, info in zip(self.parameters, self.slices, self.infos):
            if not info.zero3:
                piece.copy_(Tensor(shard_flat(param.asnumpy(), self.dp_index, self.dp_size)))


def _as_slices(tensor, size):
    """`tensor` flattened, zero-padded to a multiple of `size` and viewed as (size, L): row r is rank r's slice
    (the layout of `mg.parallel.layers.shard_flat`)."""
    length = flat_shard_length(tensor.size, size)
    flat = tensor.reshape(-1)
    pad = length * size - tensor.size
    if pad:
        flat = mint.cat([flat, mint.zeros((pad,), dtype=flat.dtype)])
    return flat.reshape(size, length)
