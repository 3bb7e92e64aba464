"""Sampling: first-order Euler integration of the learned velocity field from noise (t = 0) to data (t = 1),
on a linear or the linear-quadratic t-schedule, with classifier-free guidance."""
import mindspore as ms
import numpy as np
from mindspore import Tensor, mint
from tqdm.auto import tqdm

SCHEDULES = ("linear_quadratic", "linear")


def linear_timesteps(num_steps):
    """num_steps + 1 evenly spaced times from 0 to 1."""
    return np.linspace(0.0, 1.0, num_steps + 1)


def linear_quadratic_timesteps(num_steps, linear_steps=None, reference_steps=1000):
    """Movie Gen's schedule: the first `linear_steps` steps (default: half, 25 of 50) follow a `reference_steps`-step
    linear schedule (steps of 1/1000), the rest are placed on a quadratic that continues with the same slope and
    reaches t = 1 at step `num_steps`. Returns num_steps + 1 increasing times from 0 to 1.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if linear_steps is None:
        linear_steps = num_steps // 2
    if not 0 <= linear_steps < num_steps:
        raise ValueError(f"linear_steps must be in [0, num_steps), got {linear_steps} for {num_steps} steps")
    if num_steps >= reference_steps:
        raise ValueError(f"the linear-quadratic schedule needs num_steps < reference_steps ({reference_steps}); "
                         f"got {num_steps}: use the linear schedule")
    slope = 1.0 / reference_steps
    tau = linear_steps * slope
    remaining = num_steps - linear_steps
    # f(L + j) = tau + slope * j + a * j^2 with f(num_steps) = 1; a > 0 because num_steps < reference_steps.
    a = (1.0 - tau - slope * remaining) / remaining ** 2
    steps = np.arange(num_steps + 1, dtype=np.float64)
    j = np.maximum(steps - linear_steps, 0.0)
    times = np.where(steps <= linear_steps, steps * slope, tau + slope * j + a * j ** 2)
    times[-1] = 1.0
    return times


def concat_batch(a, b):
    """Concatenate two (nested tuples of) tensors along the batch axis (None, an input the model does not take,
    stays None). Tuples come back as `ms.mutable`: a plain tuple is a compile-time constant to a jitted model, which
    would then recompile at every step."""
    if isinstance(a, (tuple, list)):
        parts = tuple(concat_batch(x, y) for x, y in zip(a, b))
        # a tuple holding None cannot be mutable; it is only ever the argument list, unpacked into the call
        return parts if None in parts else ms.mutable(parts)
    return None if a is None else mint.cat([a, b], dim=0)


class EulerSampler:
    """Integrates dx/dt = v(x, t) with Euler steps on the chosen t-schedule.

    With guidance_scale w != 1 each step evaluates the conditional and unconditional velocities in one batched
    call and uses v = v_uncond + w (v_cond - v_uncond).
    """

    def __init__(self, num_steps: int = 50, schedule: str = "linear_quadratic", guidance_scale: float = 7.5):
        if num_steps < 1:
            raise ValueError(f"num_steps must be a positive integer, got {num_steps}")
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; choose one of {SCHEDULES}")
        self.num_steps = num_steps
        self.schedule = schedule
        self.guidance_scale = guidance_scale

    def timesteps(self):
        if self.schedule == "linear":
            return linear_timesteps(self.num_steps)
        return linear_quadratic_timesteps(self.num_steps)

    def velocity(self, model_fn, x, t, cond_args, uncond_args):
        batch = x.shape[0]
        if self.guidance_scale == 1.0 or uncond_args is None:
            return model_fn(x, Tensor(np.full((batch,), t, np.float32)), *cond_args)
        both = model_fn(mint.cat([x, x], dim=0), Tensor(np.full((2 * batch,), t, np.float32)),
                        *concat_batch(cond_args, uncond_args))
        v_cond, v_uncond = both[:batch], both[batch:]
        return v_uncond + self.guidance_scale * (v_cond - v_uncond)

    def sample(self, model_fn, noise, cond_args, uncond_args=None, progress=False):
        """Start from `noise` (t = 0) and return the sample at t = 1.

        model_fn(x, t, *args) -> velocity; cond_args / uncond_args are the conditional and unconditional extra
        arguments (same shapes). uncond_args is required when guidance_scale != 1.
        """
        if self.guidance_scale != 1.0 and uncond_args is None:
            raise ValueError("guidance_scale != 1 needs unconditional inputs (uncond_args)")
        times = self.timesteps()
        x = noise if isinstance(noise, Tensor) else Tensor(np.asarray(noise, np.float32))
        for i in tqdm(range(self.num_steps), desc="denoising", disable=not progress, leave=False):
            v = self.velocity(model_fn, x, float(times[i]), cond_args, uncond_args)
            x = x + float(times[i + 1] - times[i]) * v
        return x
