"""EMA arithmetic against NumPy, swapping EMA weights in and out, state round trip."""
import mindspore as ms
import numpy as np
import pytest

from mg.io import CheckpointError
from mg.training.ema import EMA


def _params(rng):
    return [ms.Parameter(ms.Tensor(rng.standard_normal((3, 4)).astype(np.float32)), name="w"),
            ms.Parameter(ms.Tensor(rng.standard_normal(4).astype(np.float32)), name="b")]


def _numpy_ema(history, decay, warmup):
    """Reference: shadow starts at the first value; update k (k=0,1,..) uses min(decay, (1+k)/(10+k)) if warmup."""
    shadow = history[0].astype(np.float64)
    for k, value in enumerate(history[1:]):
        d = min(decay, (1 + k) / (10 + k)) if warmup else decay
        shadow = d * shadow + (1 - d) * value
    return shadow


@pytest.mark.parametrize("warmup", [False, True])
def test_update_matches_numpy(warmup):
    rng = np.random.default_rng(0)
    params = _params(rng)
    ema = EMA(params, decay=0.9, warmup=warmup)
    history = {p.name: [p.asnumpy().copy()] for p in params}
    for step in range(1, 6):
        for p in params:
            p.copy_(ms.Tensor(rng.standard_normal(p.shape).astype(np.float32)))
            history[p.name].append(p.asnumpy().copy())
        assert ema.update(step)
    state = ema.state_dict()
    for p in params:
        np.testing.assert_allclose(state[p.name], _numpy_ema(history[p.name], 0.9, warmup), rtol=1e-5, atol=1e-6)
    assert ema.num_updates == 5


def test_swapped_in_uses_shadows_and_restores_even_on_error():
    rng = np.random.default_rng(1)
    params = _params(rng)
    ema = EMA(params, decay=0.5)
    start = [p.asnumpy().copy() for p in params]
    for p in params:
        p.copy_(ms.Tensor(p.asnumpy() + 2.0))
    ema.update(1)  # shadow = start + 1
    trained = [p.asnumpy().copy() for p in params]
    with pytest.raises(RuntimeError, match="boom"):
        with ema.swapped_in():
            for p, s in zip(params, start):
                np.testing.assert_allclose(p.asnumpy(), s + 1.0, rtol=1e-6)
            raise RuntimeError("boom")
    for p, t in zip(params, trained):
        np.testing.assert_array_equal(p.asnumpy(), t)



def test_every_k_steps_keeps_the_horizon_and_publishes_swaps():
    """Updating every k steps with decay d**k: for weights that change only at update steps, the same shadow as
    updating every step with d. `publish` runs after the targets are overwritten (in and out)."""
    rng = np.random.default_rng(4)
    every_step, every_third = _params(rng), _params(np.random.default_rng(4))
    published = []
    ema1 = EMA(every_step, decay=0.9)
    ema3 = EMA(every_third, decay=0.9, every=3, publish=lambda: published.append(every_third[0].asnumpy().copy()))
    for step in range(1, 10):
        if step % 3 == 1:
            value = [rng.standard_normal(p.shape).astype(np.float32) for p in every_step]
            for a, b, v in zip(every_step, every_third, value):
                a.copy_(ms.Tensor(v))
                b.copy_(ms.Tensor(v))
        ema1.update(step)
        assert ema3.update(step) == (step % 3 == 0)
    assert ema3.num_updates == 3
    for name, shadow in ema3.state_dict().items():
        np.testing.assert_allclose(shadow, ema1.state_dict()[name], rtol=1e-5, atol=1e-6)
    live = every_third[0].asnumpy().copy()
    with ema3.swapped_in():
        pass
    np.testing.assert_allclose(published[0], ema3.state_dict()["w"])
    np.testing.assert_array_equal(published[1], live)
    with pytest.raises(ValueError, match="every"):
        EMA(every_step, every=0)


def test_bfloat16_params_keep_float32_shadows():
    value = np.array([1.0, 2.0, 3.0], np.float32)
    param = ms.Parameter(ms.Tensor(value).astype(ms.bfloat16), name="h")
    ema = EMA([param], decay=0.75)
    param.copy_(ms.Tensor(value + 4.0).astype(ms.bfloat16))
    ema.update(1)
    assert ema.shadows[0].dtype == ms.float32
    np.testing.assert_array_equal(ema.state_dict()["h"], value + 1.0)
    with ema.swapped_in():
        assert param.dtype == ms.bfloat16
        np.testing.assert_array_equal(param.astype(ms.float32).asnumpy(), value + 1.0)
    np.testing.assert_array_equal(param.astype(ms.float32).asnumpy(), value + 4.0)


@ms.jit
def _jitted_sum(weight):
    return weight.sum()


def test_swapped_in_reaches_an_already_compiled_graph():
    param = ms.Parameter(ms.Tensor(np.ones(4, np.float32)), name="w")
    ema = EMA([param], decay=0.5)
    assert float(_jitted_sum(param).asnumpy()) == 4.0  # compile with the live weights
    param.copy_(ms.Tensor(np.full(4, 3.0, np.float32)))
    ema.update(1)  # shadow = 2
    with ema.swapped_in():
        assert float(_jitted_sum(param).asnumpy()) == 8.0
    assert float(_jitted_sum(param).asnumpy()) == 12.0


def test_state_round_trip_and_errors():
    rng = np.random.default_rng(2)
    ema = EMA(_params(rng), decay=0.9, warmup=True)
    ema.update(1)
    saved, count = ema.state_dict(), ema.num_updates
    fresh = EMA(_params(np.random.default_rng(3)), decay=0.9, warmup=True)
    fresh.load_state_dict(saved, num_updates=count)
    assert fresh.num_updates == 1 and fresh.current_decay() == pytest.approx(2 / 11)
    for name, array in fresh.state_dict().items():
        np.testing.assert_array_equal(array, saved[name])
    with pytest.raises(CheckpointError, match=r"EMA state does not fit .*: 1 missing \[b\]"):
        fresh.load_state_dict({"w": saved["w"]})
    with pytest.raises(CheckpointError, match=r"1 shape mismatch \[w: \(2, 2\) vs expected"):
        fresh.load_state_dict({"w": np.zeros((2, 2), np.float32), "b": saved["b"]})
    with pytest.raises(ValueError, match="decay"):
        EMA([], decay=1.5)
