"""Step objects: what the one training loop (mg.training.trainer.Trainer) asks of a model's training, and the DiT's
flow-matching step. The TAE's step is in mg.training.tae_step.

`FlowMatchingTrainStep` is one optimisation step (forward, backward, clipping, optimizer update) run eagerly (PyNative)
or compiled with `ms.jit`, chosen by one flag. Noise and t come from the caller (seeded on the host) so a run is
reproducible and resumable; `train_batch` draws them for a loader batch. Gradients are this process's: under a
parallel layout `ParallelAdamW` reduces (and clips) them.

With gradient accumulation over k micro-batches, the first k-1 calls only add their gradients to fp32 buffers and
the k-th applies their mean, so k micro-batches of size b update the weights like one batch of size k*b. An
optimizer that `shards_gradients` (ZeRO-2) reduces each micro-batch's gradients to this rank's slices first, so the
buffers hold slices.
"""
import mindspore as ms
import numpy as np
from mindspore import ParameterTuple, ops
from mindspore.common.initializer import Zero, initializer

from mg.data.conditions import GENERATE, edit_input, task_index
from mg.models.dit.io import config_to_dict


class TrainStep:
    """The interface of a step object. The loop owns the step counter, the learning rate, the EMA, logging,
    checkpoints, resume and validation timing; the step object owns how a batch becomes losses and updates.

    - ``model``: the trained Cell (checkpointed as ``model/``, tracked by the EMA).
    - ``optimizer``: its optimizer (the loop sets its learning rate; checkpointed as ``optimizer/``).
    - ``accumulation_steps``: loader batches per optimizer update; the last of them applies the update.
    - `train_batch`, `validate`, `extra_state` / `load_extra_state`, `metadata`: below.
    """
    accumulation_steps = 1

    def train_batch(self, batch, step: int, rng: np.random.Generator) -> dict:
        """Train on one loader batch; ``step`` is the number of optimizer updates done before this one and ``rng``
        the update's generator (seeded by seed, step and data-parallel rank). Returns float scalars to log, with
        the training loss as "loss"."""
        raise NotImplementedError

    def validate(self) -> float:
        """A validation loss (the loop swaps the EMA weights in first)."""
        raise NotImplementedError(f"{type(self).__name__} has no validation")

    def extra_state(self) -> dict:
        """Checkpoint namespaces beyond model/optimizer/ema: {namespace: {name: array}}."""
        return {}

    def load_extra_state(self, spaces: dict) -> None:
        """Restore what `extra_state` returned (``spaces`` holds every namespace of the checkpoint)."""

    def metadata(self) -> dict:
        """JSON-able checkpoint metadata describing the model (e.g. its config)."""
        return {}


class FlowMatchingTrainStep(TrainStep):
    """The DiT's step. ``inputs`` (mg.training.inputs.ModelInputs) turns loader batches into latents and text for
    `train_batch`; ``valid_batches`` (held-out (x1, (text_embs, text_masks)) pairs) with ``valid_num_t`` and
    ``valid_seed`` define `validate` (FlowMatching.validation_loss)."""

    def __init__(self, model, optimizer, flow, jit: bool = True, clip_grad_norm: float = 0.0,
                 accumulation_steps: int = 1, inputs=None, valid_batches=None, valid_num_t: int = 8,
                 valid_seed: int = 0, conditions=None):
        if accumulation_steps < 1:
            raise ValueError(f"accumulation_steps must be >= 1, got {accumulation_steps}")
        self.model = model
        self.optimizer = optimizer
        self.flow = flow
        self.clip_grad_norm = clip_grad_norm
        self.accumulation_steps = accumulation_steps
        self.inputs = inputs
        self.conditions = conditions  # mg.data.conditions.ConditionTasks of a conditioned model, or None
        self.valid_batches, self.valid_num_t, self.valid_seed = valid_batches, valid_num_t, valid_seed
        self.micro_step = 0
        self.grad_fn = ms.value_and_grad(self.loss, None, optimizer.parameters)
        self.jit = jit
        self.shards_gradients = getattr(optimizer, "shards_gradients", False)
        if accumulation_steps > 1:
            shapes = optimizer.gradient_shapes() if self.shards_gradients else [p.shape for p in optimizer.parameters]
            self.accumulated = ParameterTuple(
                [ms.Parameter(initializer(Zero(), shape, ms.float32), name=f"accumulated.{p.name}",
                              requires_grad=False) for p, shape in zip(optimizer.parameters, shapes)])
        compile_ = ms.jit if jit else (lambda fn: fn)
        self._update = compile_(self.update)
        self._accumulate = compile_(self.accumulate)

    def loss(self, x1, x0, t, text_embs, text_masks, *condition):
        return self.flow.loss(self.model, x1, x0, t, text_embs, text_masks, *condition)

    def gradients(self, x1, x0, t, text_embs, text_masks, *condition):
        """The loss and this micro-batch's gradients (this rank's reduced slices when the optimizer shards them)."""
        loss, grads = self.grad_fn(x1, x0, t, text_embs, text_masks, *condition)
        return loss, (self.optimizer.reduce_gradients(grads) if self.shards_gradients else grads)

    def accumulate(self, x1, x0, t, text_embs, text_masks, *condition):
        loss, grads = self.gradients(x1, x0, t, text_embs, text_masks, *condition)
        for buffer, grad in zip(self.accumulated, grads):
            ops.assign_add(buffer, grad.astype(ms.float32))
        return loss

    def update(self, x1, x0, t, text_embs, text_masks, *condition):
        loss, grads = self.gradients(x1, x0, t, text_embs, text_masks, *condition)
        if self.accumulation_steps > 1:
            summed = []
            for buffer, grad in zip(self.accumulated, grads):
                summed.append(((buffer + grad.astype(ms.float32)) / self.accumulation_steps).astype(grad.dtype))
                ops.assign(buffer, ops.zeros_like(buffer))
            grads = tuple(summed)
        if self.clip_grad_norm > 0:
            grads = ops.clip_by_global_norm(grads, self.clip_grad_norm)
        if self.shards_gradients:
            self.optimizer.apply_reduced(grads)
        else:
            self.optimizer(grads)
        return loss

    @property
    def completes_update(self):
        """Whether the next call applies an optimizer update (rather than only accumulating)."""
        return self.micro_step == self.accumulation_steps - 1

    def __call__(self, x1, x0, t, text_embs, text_masks, *condition):
        """Latents x1 (B, C, T, H, W), noise x0 of the same shape, times t (B,), per-encoder tuples of text
        embeddings and masks, and for a conditioned model its condition input (mg.data.conditions). Returns this
        micro-batch's loss (before any update)."""
        step = self._update if self.completes_update else self._accumulate
        self.micro_step = (self.micro_step + 1) % self.accumulation_steps
        # ms.mutable: a plain tuple argument is a compile-time constant under ms.jit (a new tuple recompiles)
        return step(x1, x0, t, ms.mutable(tuple(text_embs)), ms.mutable(tuple(text_masks)), *condition)

    def train_batch(self, batch, step, rng):
        x1, embs, masks = self.inputs(batch, rng)
        x0 = ms.Tensor(self.flow.sample_noise(x1.shape, rng))
        t = ms.Tensor(self.flow.sample_t(x1.shape[0], rng))
        extra = self.targets(batch, rng) + self.condition_inputs(batch, x1, rng)
        return {"loss": float(self(x1, x0, t, embs, masks, *extra).asnumpy())}

    def targets(self, batch, rng):
        """Inputs that only the loss reads, before the condition's (none here; a pixel loss's frames), drawn with
        the update's generator `rng` where they are random."""
        return ()

    def condition_inputs(self, batch, x1, rng):
        """The model's inputs after the text: the condition and tasks (`pixel_conditions`), then the reference
        images and their mask of a model with a reference tower (None for what the model does not take)."""
        extra = self.pixel_conditions(batch, x1, rng)
        if self.model.config.reference_encoder is None or "reference" not in batch:
            return extra
        return extra + (None,) * (2 - len(extra)) + (ms.Tensor(batch["reference"]), ms.Tensor(batch["reference_mask"]))

    def pixel_conditions(self, batch, x1, rng):
        """A conditioned model's condition, and the tasks of a model with task embeddings. An edit sample (a task
        other than generation) knows its whole source video; the others draw what they are given
        (self.conditions)."""
        if self.conditions is None:
            return ()
        condition = self.conditions.draw(x1.asnumpy(), rng)
        if not self.model.config.num_tasks:
            return (ms.Tensor(condition),)
        tasks = np.asarray(batch.get("task", np.zeros(x1.shape[0])), np.int32)
        edits = tasks != task_index(GENERATE)
        if edits.any():  # only the edits' sources are read (in pixel mode: encoded)
            sources = {key: value[edits] for key, value in batch.items() if key.startswith("source_")}
            condition[edits] = edit_input(self.inputs.latents(sources, rng, "source_").asnumpy())
        return ms.Tensor(condition), ms.Tensor(tasks)

    def validate(self):
        return self.flow.validation_loss(self.model, self.valid_batches, self.valid_num_t, self.valid_seed)

    def metadata(self):
        return {"dit_config": config_to_dict(self.model.config)}
