import mindspore as ms
import numpy as np
import pytest

from mg.schedulers import EulerSampler, FlowMatching, linear_quadratic_timesteps, linear_timesteps

SIGMA = 1e-5


@pytest.mark.parametrize("steps", [2, 7, 20, 50, 100, 250])
def test_linear_quadratic_schedule_shape(steps):
    times = linear_quadratic_timesteps(steps)
    assert len(times) == steps + 1
    assert times[0] == 0.0 and times[-1] == 1.0
    assert np.all(np.diff(times) > 0)
    linear = steps // 2
    np.testing.assert_allclose(times[:linear + 1], np.arange(linear + 1) / 1000.0, atol=1e-12)
    # the quadratic part starts with the linear slope and its steps only grow
    gaps = np.diff(times)
    assert np.all(np.diff(gaps[linear:]) > 0)


def test_default_50_step_schedule_follows_the_1000_step_linear_schedule_for_25_steps():
    times = linear_quadratic_timesteps(50)
    np.testing.assert_allclose(times[:26], np.linspace(0, 1, 1001)[:26], atol=1e-12)
    assert times[26] > times[25] + 1 / 1000


def test_bad_schedule_arguments():
    with pytest.raises(ValueError):
        linear_quadratic_timesteps(0)
    with pytest.raises(ValueError, match="linear schedule"):
        linear_quadratic_timesteps(1000)
    with pytest.raises(ValueError, match="unknown schedule"):
        EulerSampler(schedule="cosine")
    with pytest.raises(ValueError, match="positive"):
        EulerSampler(num_steps=-3)


def exact_velocity_field(x1):
    """The velocity field of the path through X1: at any (x, t), the x0 that x came from is solved for."""
    def model(x, t):
        tt = t.asnumpy().reshape(-1, 1, 1, 1, 1)
        x0 = (x.asnumpy() - tt * x1) / (1 - (1 - SIGMA) * tt)
        return ms.Tensor((x1 - (1 - SIGMA) * x0).astype(np.float32))
    return model


@pytest.mark.parametrize("schedule", ["linear_quadratic", "linear"])
def test_euler_with_the_exact_velocity_recovers_x1(schedule):
    rng = np.random.default_rng(0)
    x1 = rng.standard_normal((2, 3, 2, 4, 4)).astype(np.float32)
    noise = rng.standard_normal(x1.shape).astype(np.float32)
    sampler = EulerSampler(num_steps=50, schedule=schedule, guidance_scale=1.0)
    out = sampler.sample(exact_velocity_field(x1), noise, ()).asnumpy()
    np.testing.assert_allclose(out, x1, atol=1e-4)


def test_euler_on_gaussian_data_converges_at_first_order():
    """Data N(mu, s^2), noise N(0, 1): the marginal velocity field is linear in x and the ODE maps the noise
    quantile to the data quantile, x1 = mu + s * x0 (sigma_min ~ 0)."""
    mu, s = 2.0, 0.5

    def model(x, t):
        tt = float(t.asnumpy()[0])
        var = tt ** 2 * s ** 2 + (1 - tt) ** 2
        mean = tt * mu
        slope = (tt * s ** 2 - (1 - tt)) / var
        return ms.Tensor((mu + slope * (x.asnumpy() - mean)).astype(np.float32))

    noise = np.linspace(-2, 2, 9, dtype=np.float32).reshape(1, 9, 1, 1, 1)
    errors = []
    for steps in (10, 40, 160):
        out = EulerSampler(steps, "linear", guidance_scale=1.0).sample(model, noise, ()).asnumpy()
        errors.append(np.abs(out - (mu + s * noise)).max())
    # first-order method: 4x the steps, about 1/4 of the error
    assert 3.0 < errors[0] / errors[1] < 5.0 and 3.0 < errors[1] / errors[2] < 5.0
    assert errors[2] < 0.01


def test_cfg_batches_both_passes_and_combines_them():
    calls = []

    def model(x, t, cond):
        calls.append(x.shape[0])
        return ms.Tensor(np.broadcast_to(cond.asnumpy().reshape(-1, 1, 1, 1, 1), x.shape).astype(np.float32))

    noise = np.zeros((2, 1, 1, 1, 1), np.float32)
    cond, uncond = ms.Tensor(np.array([1.0, 2.0], np.float32)), ms.Tensor(np.array([0.5, 0.5], np.float32))
    out = EulerSampler(num_steps=3, guidance_scale=4.0).sample(model, noise, (cond,), (uncond,)).asnumpy()
    assert calls == [4, 4, 4]
    # v = u + w (c - u) constant in time, integrated over [0, 1]
    np.testing.assert_allclose(out.ravel(), [0.5 + 4 * 0.5, 0.5 + 4 * 1.5], rtol=1e-6)

    calls.clear()
    out = EulerSampler(num_steps=3, guidance_scale=1.0).sample(model, noise, (cond,), (uncond,)).asnumpy()
    assert calls == [2, 2, 2]
    np.testing.assert_allclose(out.ravel(), [1.0, 2.0], rtol=1e-6)
    with pytest.raises(ValueError, match="unconditional"):
        EulerSampler(num_steps=3, guidance_scale=2.0).sample(model, noise, (cond,))


def test_linear_timesteps():
    np.testing.assert_allclose(linear_timesteps(4), [0, 0.25, 0.5, 0.75, 1.0])
