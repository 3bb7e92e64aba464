"""One TAE optimisation step: autoencoder update, then (once started) discriminator update; eager or ms.jit."""
import mindspore as ms
from mindspore import ops

from mg.models.tae.losses import hinge_d_loss


class TAETrainStep:
    """Call with a batch x (B, 3, T, H, W) in [-1, 1] and the global step; returns a dict of float losses.

    `optimizer` updates the autoencoder, `disc_optimizer` the loss's discriminator (if the loss has one); the
    discriminator trains and the adversarial term applies from `loss.cfg.disc_start` on. Image (T=1) and video batches
    compile one graph each under jit.
    """

    def __init__(self, tae, loss, optimizer, disc_optimizer=None, jit=True, clip_grad_norm=0.0):
        self.tae, self.loss, self.optimizer = tae, loss, optimizer
        self.discriminator, self.disc_optimizer = loss.discriminator, disc_optimizer
        if self.discriminator is not None and disc_optimizer is None:
            raise ValueError("TAETrainStep: a loss with a discriminator needs disc_optimizer")
        self.clip_grad_norm = clip_grad_norm
        self._g_grad = ms.value_and_grad(self._g_forward, None, optimizer.parameters, has_aux=True)
        self._g_step = ms.jit(self._g_update) if jit else self._g_update
        if self.discriminator is not None:
            self._d_grad = ms.value_and_grad(self._d_forward, None, disc_optimizer.parameters)
            self._d_step = ms.jit(self._d_update) if jit else self._d_update

    def _g_forward(self, x, adversarial):
        recon, mean, logvar = self.tae(x)
        total, parts = self.loss(x, recon, mean, logvar, adversarial)
        return total, parts, recon

    def _g_update(self, x, adversarial):
        (total, parts, recon), grads = self._g_grad(x, adversarial)
        if self.clip_grad_norm > 0:
            grads = ops.clip_by_global_norm(grads, self.clip_grad_norm)
        self.optimizer(grads)
        return total, parts, recon

    def _d_forward(self, x, recon):
        return hinge_d_loss(self.discriminator(x), self.discriminator(recon))

    def _d_update(self, x, recon):
        loss, grads = self._d_grad(x, ops.stop_gradient(recon))
        self.disc_optimizer(grads)
        return loss

    def __call__(self, x, step):
        adversarial = float(self.discriminator is not None and step >= self.loss.cfg.disc_start)
        total, parts, recon = self._g_step(x, ms.Tensor(adversarial, ms.float32))
        out = {"loss": float(total.asnumpy()), **{n: float(p.asnumpy()) for n, p in zip(self.loss.part_names, parts)}}
        if adversarial:
            out["d_loss"] = float(self._d_step(x, recon).asnumpy())
        return out
