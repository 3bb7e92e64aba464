import mindspore as ms
import numpy as np
import pytest

from mg.schedulers import FlowMatching

SIGMA = 1e-5


def test_path_endpoints_and_velocity_is_its_time_derivative():
    fm = FlowMatching(sigma_min=SIGMA)
    rng = np.random.default_rng(0)
    x0, x1 = (ms.Tensor(rng.standard_normal((3, 2, 1, 2, 2)).astype(np.float32)) for _ in range(2))

    def at(t):
        return fm.interpolate(x0, x1, ms.Tensor(np.full(3, t, np.float32))).asnumpy()

    np.testing.assert_allclose(at(0.0), x0.asnumpy(), rtol=1e-6)
    np.testing.assert_allclose(at(1.0), x1.asnumpy() + SIGMA * x0.asnumpy(), rtol=1e-5, atol=1e-6)
    finite_difference = (at(0.6) - at(0.4)) / 0.2
    np.testing.assert_allclose(fm.velocity(x0, x1).asnumpy(), finite_difference, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(fm.velocity(x0, x1).asnumpy(), x1.asnumpy() - (1 - SIGMA) * x0.asnumpy(),
                               rtol=1e-6)


def test_per_sample_times_broadcast_over_the_latent():
    fm = FlowMatching()
    x0 = ms.Tensor(np.zeros((2, 1, 1, 1, 1), np.float32))
    x1 = ms.Tensor(np.ones((2, 1, 1, 1, 1), np.float32))
    out = fm.interpolate(x0, x1, ms.Tensor(np.array([0.25, 0.75], np.float32))).asnumpy().ravel()
    np.testing.assert_allclose(out, [0.25, 0.75], rtol=1e-6)


def test_logit_normal_and_uniform_t_samplers():
    rng = np.random.default_rng(0)
    t = FlowMatching(t_sampler="logit_normal").sample_t(200_000, rng)
    assert t.dtype == np.float32 and t.min() > 0 and t.max() < 1
    logits = np.log(t / (1 - t))
    assert abs(logits.mean()) < 0.01 and abs(logits.std() - 1) < 0.01
    u = FlowMatching(t_sampler="uniform").sample_t(200_000, rng)
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002
    with pytest.raises(ValueError, match="t_sampler"):
        FlowMatching(t_sampler="beta")


def test_loss_is_the_mse_to_the_target_velocity():
    fm = FlowMatching()
    rng = np.random.default_rng(0)
    x0, x1 = (rng.standard_normal((2, 3, 1, 2, 2)).astype(np.float32) for _ in range(2))
    t = np.array([0.3, 0.8], np.float32)
    constant = rng.standard_normal((2, 3, 1, 2, 2)).astype(np.float32)
    loss = fm.loss(lambda x, tt: ms.Tensor(constant), ms.Tensor(x1), ms.Tensor(x0), ms.Tensor(t))
    expected = np.mean((constant - (x1 - (1 - fm.sigma_min) * x0)) ** 2)
    assert float(loss.asnumpy()) == pytest.approx(expected, rel=1e-5)


def test_validation_loss_is_repeatable_and_depends_on_the_model():
    fm = FlowMatching()
    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal((2, 3, 1, 2, 2)).astype(np.float32), ()) for _ in range(2)]
    weight = [0.5]

    def model(x, t):
        return x * weight[0]

    first = fm.validation_loss(model, batches, num_t=4, seed=0)
    assert fm.validation_loss(model, batches, num_t=4, seed=0) == first
    weight[0] = 0.0
    assert fm.validation_loss(model, batches, num_t=4, seed=0) != first
    np.testing.assert_allclose(fm.validation_grid(4), [0.125, 0.375, 0.625, 0.875])
