"""One flow-matching optimisation step (forward, backward, optional gradient reduction and clipping, optimizer
update), run eagerly (PyNative) or compiled with `ms.jit`, chosen by one flag. Noise and t come from the caller
(seeded on the host) so a run is reproducible and resumable.

With gradient accumulation over k micro-batches, the first k-1 calls only add their gradients to fp32 buffers and
the k-th applies their mean, so k micro-batches of size b update the weights like one batch of size k*b.
"""
import mindspore as ms
from mindspore import ParameterTuple, ops
from mindspore.common.initializer import Zero, initializer


class FlowMatchingTrainStep:
    def __init__(self, model, optimizer, flow, jit: bool = True, clip_grad_norm: float = 0.0, grad_reducer=None,
                 accumulation_steps: int = 1):
        """`grad_reducer` (optional) maps the gradient tuple to the reduced one (data-parallel averaging); it runs
        before clipping so the clip sees the global gradient."""
        if accumulation_steps < 1:
            raise ValueError(f"accumulation_steps must be >= 1, got {accumulation_steps}")
        self.model = model
        self.optimizer = optimizer
        self.flow = flow
        self.clip_grad_norm = clip_grad_norm
        self.grad_reducer = grad_reducer
        self.accumulation_steps = accumulation_steps
        self.micro_step = 0
        self.grad_fn = ms.value_and_grad(self.loss, None, optimizer.parameters)
        self.jit = jit
        if accumulation_steps > 1:
            self.accumulated = ParameterTuple(
                [ms.Parameter(initializer(Zero(), p.shape, ms.float32), name=f"accumulated.{p.name}",
                              requires_grad=False) for p in optimizer.parameters])
        compile_ = ms.jit if jit else (lambda fn: fn)
        self._update = compile_(self.update)
        self._accumulate = compile_(self.accumulate)

    def loss(self, x1, x0, t, text_embs, text_masks):
        return self.flow.loss(self.model, x1, x0, t, text_embs, text_masks)

    def accumulate(self, x1, x0, t, text_embs, text_masks):
        loss, grads = self.grad_fn(x1, x0, t, text_embs, text_masks)
        for buffer, grad in zip(self.accumulated, grads):
            ops.assign_add(buffer, grad.astype(ms.float32))
        return loss

    def update(self, x1, x0, t, text_embs, text_masks):
        loss, grads = self.grad_fn(x1, x0, t, text_embs, text_masks)
        if self.accumulation_steps > 1:
            summed = []
            for buffer, grad in zip(self.accumulated, grads):
                summed.append(((buffer + grad.astype(ms.float32)) / self.accumulation_steps).astype(grad.dtype))
                ops.assign(buffer, ops.zeros_like(buffer))
            grads = tuple(summed)
        if self.grad_reducer is not None:
            grads = self.grad_reducer(grads)
        if self.clip_grad_norm > 0:
            grads = ops.clip_by_global_norm(grads, self.clip_grad_norm)
        self.optimizer(grads)
        return loss

    @property
    def completes_update(self):
        """Whether the next call applies an optimizer update (rather than only accumulating)."""
        return self.micro_step == self.accumulation_steps - 1

    def __call__(self, x1, x0, t, text_embs, text_masks):
        """Latents x1 (B, C, T, H, W), noise x0 of the same shape, times t (B,), and per-encoder tuples of text
        embeddings and masks. Returns this micro-batch's loss (before any update)."""
        step = self._update if self.completes_update else self._accumulate
        self.micro_step = (self.micro_step + 1) % self.accumulation_steps
        # ms.mutable: a plain tuple argument is a compile-time constant under ms.jit (a new tuple recompiles)
        return step(x1, x0, t, ms.mutable(tuple(text_embs)), ms.mutable(tuple(text_masks)))
