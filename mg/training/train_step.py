"""One flow-matching optimisation step (forward, backward, optional gradient clipping, optimizer update), run eagerly
(PyNative) or compiled with `ms.jit`, chosen by one flag. Noise and t come from the caller (seeded on the host) so a
run is reproducible and resumable."""
import mindspore as ms
from mindspore import ops


class FlowMatchingTrainStep:
    def __init__(self, model, optimizer, flow, jit: bool = True, clip_grad_norm: float = 0.0):
        self.model = model
        self.optimizer = optimizer
        self.flow = flow
        self.clip_grad_norm = clip_grad_norm
        self.grad_fn = ms.value_and_grad(self.loss, None, optimizer.parameters)
        self.jit = jit
        self._step = ms.jit(self.step) if jit else self.step

    def loss(self, x1, x0, t, text_embs, text_masks):
        return self.flow.loss(self.model, x1, x0, t, text_embs, text_masks)

    def step(self, x1, x0, t, text_embs, text_masks):
        loss, grads = self.grad_fn(x1, x0, t, text_embs, text_masks)
        if self.clip_grad_norm > 0:
            grads = ops.clip_by_global_norm(grads, self.clip_grad_norm)
        self.optimizer(grads)
        return loss

    def __call__(self, x1, x0, t, text_embs, text_masks):
        """Latents x1 (B, C, T, H, W), noise x0 of the same shape, times t (B,), and per-encoder tuples of text
        embeddings and masks. Returns the loss before the update."""
        return self._step(x1, x0, t, tuple(text_embs), tuple(text_masks))
