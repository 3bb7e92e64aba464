import mindspore as ms
import numpy as np
import pytest

from mg.models.dit import MovieGenDiT
from mg.schedulers import FlowMatching
from mg.optim import build_adamw
from mg.training.train_step import FlowMatchingTrainStep

from dit.helpers import text_inputs, tiny_config


def make_step(jit, lr=3e-3, seed=0, **config):
    ms.set_seed(seed)
    model = MovieGenDiT(tiny_config(**config))
    optimizer = build_adamw(model.trainable_params(), lr=lr, weight_decay=0.0)
    return model, FlowMatchingTrainStep(model, optimizer, FlowMatching(), jit=jit)


def fixed_pair(batch, rng):
    """One (latent, text) pair, repeated `batch` times (each copy gets its own noise and t)."""
    x1 = rng.standard_normal((1, 4, 1, 8, 8)).astype(np.float32)
    embs, masks = text_inputs(1, [[4], [3]], rng)
    rep = lambda t: ms.Tensor(np.repeat(t.asnumpy(), batch, axis=0))  # noqa: E731
    return x1, tuple(rep(e) for e in embs), tuple(rep(m) for m in masks), (embs, masks)


def test_pynative_and_graph_mode_give_the_same_losses():
    rng = np.random.default_rng(0)
    x1, embs, masks, _ = fixed_pair(2, rng)
    x1 = ms.Tensor(np.repeat(x1, 2, axis=0))
    flow = FlowMatching()
    inputs = [(ms.Tensor(flow.sample_noise(x1.shape, rng)), ms.Tensor(flow.sample_t(2, rng))) for _ in range(4)]
    losses = {}
    for jit in (False, True):
        _, step = make_step(jit)
        losses[jit] = [float(step(x1, x0, t, embs, masks).asnumpy()) for x0, t in inputs]
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-4)
    assert losses[True][-1] != losses[True][0]  # the weights did move


@pytest.mark.slow
@pytest.mark.parametrize("jit", [True, False], ids=["graph", "pynative"])
def test_tiny_model_overfits_one_pair(jit):
    rng = np.random.default_rng(0)
    batch = 8
    x1, embs, masks, single = fixed_pair(batch, rng)
    model, step = make_step(jit, max_t=1, max_h=4, max_w=4)
    flow = FlowMatching()
    validation = [(x1, single)]
    before = flow.validation_loss(model, validation, num_t=8, seed=1)
    x1_batch = ms.Tensor(np.repeat(x1, batch, axis=0))
    for _ in range(250):
        x0 = ms.Tensor(flow.sample_noise(x1_batch.shape, rng))
        step(x1_batch, x0, ms.Tensor(flow.sample_t(batch, rng)), embs, masks)
    after = flow.validation_loss(model, validation, num_t=8, seed=1)
    assert before / after > 10, (before, after)


@pytest.mark.parametrize("jit", [True, False], ids=["graph", "pynative"])
def test_accumulating_two_half_batches_equals_one_full_batch(jit):
    rng = np.random.default_rng(0)
    flow = FlowMatching()
    x1 = rng.standard_normal((4, 4, 1, 4, 4)).astype(np.float32)
    x0 = flow.sample_noise(x1.shape, rng)
    t = flow.sample_t(4, rng)
    embs, masks = text_inputs(4, [[4, 2, 3, 1], [3, 0, 6, 2]], rng)
    weights = {}
    for accumulation in (1, 2):
        ms.set_seed(0)
        model = MovieGenDiT(tiny_config(max_t=1, max_h=2, max_w=2))
        optimizer = build_adamw(model.trainable_params(), lr=1e-2, weight_decay=0.1)
        step = FlowMatchingTrainStep(model, optimizer, flow, jit=jit, accumulation_steps=accumulation,
                                     clip_grad_norm=1.0)
        for _ in range(2):  # two optimizer updates
            if accumulation == 1:
                step(ms.Tensor(x1), ms.Tensor(x0), ms.Tensor(t), embs, masks)
            else:
                for half in (slice(0, 2), slice(2, 4)):
                    step(ms.Tensor(x1[half]), ms.Tensor(x0[half]), ms.Tensor(t[half]),
                         tuple(ms.Tensor(e.asnumpy()[half]) for e in embs),
                         tuple(ms.Tensor(m.asnumpy()[half]) for m in masks))
        weights[accumulation] = {p.name: p.asnumpy() for p in model.trainable_params()}
    moved = [n for n in weights[1] if np.abs(weights[1][n] - weights[2][n]).max() > 2e-5]
    assert moved == []
    assert int(optimizer.global_step.asnumpy().item()) == 2
