"""Flow matching (optimal-transport path) for training: the path, t sampling, the loss and the validation loss.

Convention: t = 0 is noise X0, t = 1 is data X1;  X_t = t X1 + (1 - (1 - sigma_min) t) X0  and the target velocity
is V = dX_t/dt = X1 - (1 - sigma_min) X0. The object holds no model: the loss functions take tensors (and run inside
a jitted train step), the samplers of t and noise take a NumPy Generator so that runs are reproducible and resumable.
"""
import numpy as np
from mindspore import Tensor, mint

T_SAMPLERS = ("logit_normal", "uniform")


class FlowMatching:
    def __init__(self, sigma_min: float = 1e-5, t_sampler: str = "logit_normal", logit_mean: float = 0.0,
                 logit_std: float = 1.0):
        if t_sampler not in T_SAMPLERS:
            raise ValueError(f"t_sampler must be one of {T_SAMPLERS}, got {t_sampler!r}")
        if not 0.0 <= sigma_min < 1.0:
            raise ValueError(f"sigma_min must be in [0, 1), got {sigma_min}")
        self.sigma_min = sigma_min
        self.t_sampler = t_sampler
        self.logit_mean = logit_mean
        self.logit_std = logit_std

    # --- sampling of the training inputs (host side, seeded) ---------------------------------------------------
    def sample_t(self, batch_size, rng):
        """Times in (0, 1): logit-normal (SD3 / Movie Gen) or uniform. float32 array of shape (batch_size,)."""
        if self.t_sampler == "uniform":
            return rng.random(batch_size).astype(np.float32)
        z = rng.normal(self.logit_mean, self.logit_std, batch_size)
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)

    @staticmethod
    def sample_noise(shape, rng):
        return rng.standard_normal(shape, dtype=np.float32)

    # --- the path and the loss (tensor ops; usable under ms.jit) -----------------------------------------------
    def interpolate(self, x0, x1, t):
        """X_t for per-sample times t of shape (B,)."""
        t = t.reshape((-1,) + (1,) * (x1.ndim - 1))
        return t * x1 + (1 - (1 - self.sigma_min) * t) * x0

    def velocity(self, x0, x1):
        return x1 - (1 - self.sigma_min) * x0

    def loss(self, model_fn, x1, x0, t, *model_args):
        """Mean squared error between model_fn(X_t, t, *model_args) and the target velocity."""
        return self.loss_and_estimate(model_fn, x1, x0, t, *model_args)[0]

    def loss_and_estimate(self, model_fn, x1, x0, t, *model_args):
        """(the loss, the one-step estimate of X1 from X_t and the model's velocity: what a pixel-space loss
        decodes)."""
        x_t = self.interpolate(x0, x1, t)
        prediction = model_fn(x_t, t, *model_args).astype(x1.dtype)
        loss = mint.mean(mint.square(prediction - self.velocity(x0, x1)))
        return loss, self.clean_estimate(x_t, prediction, t)

    def clean_estimate(self, x_t, velocity, t):
        """X1 from X_t and the velocity at t: with b = 1 - sigma_min and a = 1 - b t, X_t = t X1 + a X0 and
        V = X1 - b X0, so X1 = (b X_t + a V) / (b t + a) (= X_t + (1 - t) V when sigma_min = 0)."""
        t = t.reshape((-1,) + (1,) * (x_t.ndim - 1))
        b = 1 - self.sigma_min
        a = 1 - b * t
        return (b * x_t + a * velocity) / (b * t + a)

    # --- validation ---------------------------------------------------------------------------------------------
    @staticmethod
    def validation_grid(num_t=8):
        """Fixed, evenly spread times (midpoints of num_t equal bins), the same for every evaluation."""
        return ((np.arange(num_t) + 0.5) / num_t).astype(np.float32)

    def validation_loss(self, model_fn, batches, num_t=8, seed=0):
        """Mean loss over `batches` x a fixed grid of t, with noise drawn from a generator restarted at `seed`:
        the same weights and batches always give the same number.

        `batches` yields (x1, model_args): NumPy/Tensor latents and the extra arguments of model_fn.
        """
        rng = np.random.default_rng(seed)
        grid = self.validation_grid(num_t)
        total, count = 0.0, 0
        for x1, model_args in batches:
            x1 = Tensor(np.asarray(x1, dtype=np.float32))
            for t in grid:
                x0 = Tensor(self.sample_noise(x1.shape, rng))
                tt = Tensor(np.full((x1.shape[0],), t, dtype=np.float32))
                total += float(self.loss(model_fn, x1, x0, tt, *model_args).asnumpy())
                count += 1
        if count == 0:
            raise ValueError("validation_loss got no batches")
        return total / count
