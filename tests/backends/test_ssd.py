"""Mamba2's SSD scan (chunked matrix products) against the sequential recurrence written in NumPy, forward and backward
(the backward as the reverse-time adjoint recurrence), in PyNative and under jit, in both directions (run from the end,
it equals the recurrence over the flipped tokens); the causal depthwise convolution's hand-written backward against
autodiff of its formula, in both directions."""
import mindspore as ms
from mindspore import mint
import numpy as np
import pytest

import mg.backends.ssd as ssd
from mg.backends.ssd import causal_depthwise_conv, ssd_scan


def recurrence(x, dt, a, b, c):
    """h_t = exp(dt_t a) h_{t-1} + dt_t x_t b_t^T, y_t = h_t c_t; returns y and every state h_t (float64)."""
    batch, length, heads, p = x.shape
    h = np.zeros((batch, heads, p, b.shape[-1]))
    ys, states = np.zeros((batch, length, heads, p)), []
    for t in range(length):
        decay = np.exp(dt[:, t] * a)[:, :, None, None]
        h = decay * h + dt[:, t, :, None, None] * x[:, t, :, :, None] * b[:, t, None, None, :]
        states.append(h)
        ys[:, t] = (h * c[:, t, None, None, :]).sum(-1)
    return ys, states


def adjoint(x, dt, a, b, c, dy):
    """Gradients of sum(y * dy) by the reverse-time recurrence gh_t = dy_t c_t^T + exp(dt_{t+1} a) gh_{t+1}."""
    _, states = recurrence(x, dt, a, b, c)
    batch, length, heads, p = x.shape
    grads = [np.zeros_like(v, dtype=np.float64) for v in (x, dt, a, b, c)]
    gx, gdt, ga, gb, gc = grads
    gh = np.zeros_like(states[0])
    for t in reversed(range(length)):
        gh = dy[:, t, :, :, None] * c[:, t, None, None, :] + gh
        prev = states[t - 1] if t else np.zeros_like(gh)
        decay = np.exp(dt[:, t] * a)
        carried = (gh * prev).sum((-1, -2)) * decay                       # <gh_t, h_{t-1}> * decay
        gc[:, t] = (states[t] * dy[:, t, :, :, None]).sum((1, 2))
        gx[:, t] = dt[:, t, :, None] * (gh * b[:, t, None, None, :]).sum(-1)
        gb[:, t] = (dt[:, t, :, None, None] * gh * x[:, t, :, :, None]).sum((1, 2))
        gdt[:, t] = (gh * x[:, t, :, :, None] * b[:, t, None, None, :]).sum((-1, -2)) + a * carried
        ga += (dt[:, t] * carried).sum(0)
        gh = gh * decay[:, :, None, None]
    return grads


def inputs(length, seed=0, batch=2, heads=3, p=4, n=5):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((batch, length, heads, p)).astype(np.float32),
            rng.uniform(0.01, 0.6, (batch, length, heads)).astype(np.float32),
            -rng.uniform(0.3, 2.0, heads).astype(np.float32),
            rng.standard_normal((batch, length, n)).astype(np.float32),
            rng.standard_normal((batch, length, n)).astype(np.float32))


def flip_tokens(*arrays):
    """The arrays with their token axis (1) reversed; the decay rates (1-D) unchanged."""
    return tuple(v if v.ndim == 1 else np.ascontiguousarray(v[:, ::-1]) for v in arrays)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("length, chunk, state_block", [(24, 8, 64), (37, 8, 64), (61, 4, 4), (5, 16, 64)])
def test_scan_equals_the_recurrence(monkeypatch, length, chunk, state_block, reverse):
    # (61, 4, 4): 16 chunks in blocks of 4 -> the scan over chunk states runs in blocks, twice nested
    monkeypatch.setattr(ssd, "STATE_BLOCK", state_block)
    args = inputs(length)
    y = ssd_scan(*(ms.Tensor(v) for v in args), chunk=chunk, reverse=reverse).asnumpy()
    reference = tuple(v.astype(np.float64) for v in (flip_tokens(*args) if reverse else args))
    expected = recurrence(*reference)[0]
    np.testing.assert_allclose(y, flip_tokens(expected)[0] if reverse else expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("compiled, reverse", [(False, False), (True, False), (True, True)])
def test_scan_gradients_equal_the_adjoint_recurrence(monkeypatch, compiled, reverse):
    monkeypatch.setattr(ssd, "STATE_BLOCK", 2)
    args = inputs(19, seed=1)
    dy = np.random.default_rng(2).standard_normal(args[0].shape).astype(np.float32)

    def loss(*tensors):
        return (ssd_scan(*tensors, chunk=4, reverse=reverse) * ms.Tensor(dy)).sum()

    fn = ms.jit(loss) if compiled else loss
    grads = ms.grad(fn, (0, 1, 2, 3, 4))(*(ms.Tensor(v) for v in args))
    if reverse:  # the gradients over the flipped tokens, flipped back
        expected = flip_tokens(*adjoint(*(v.astype(np.float64) for v in flip_tokens(*args, dy))))
    else:
        expected = adjoint(*(v.astype(np.float64) for v in args), dy.astype(np.float64))
    for name, got, want in zip(("x", "dt", "a", "b", "c"), grads, expected):
        np.testing.assert_allclose(got.asnumpy(), want, rtol=2e-4, atol=2e-4, err_msg=name)


def test_strong_decay_does_not_overflow():
    x, dt, a, b, c = inputs(40, seed=3)
    y = ssd_scan(ms.Tensor(x), ms.Tensor(dt * 50), ms.Tensor(a * 20), ms.Tensor(b), ms.Tensor(c), chunk=8).asnumpy()
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, recurrence(x, dt * 50.0, a * 20.0, b, c)[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("compiled, reverse", [(False, False), (True, False), (True, True)])
def test_causal_depthwise_conv_and_its_backward(compiled, reverse):
    rng = np.random.default_rng(0)
    x, weight, bias, dy = (rng.standard_normal(s).astype(np.float32) for s in ((2, 9, 5), (4, 5), (5,), (2, 9, 5)))
    causal = bias + sum(weight[k] * np.pad(x[:, ::-1] if reverse else x, ((0, 0), (3, 0), (0, 0)))[:, k:k + 9]
                        for k in range(4))
    expected = causal[:, ::-1] if reverse else causal  # causal from the end: the causal convolution of the flip

    def conv(*tensors):
        return causal_depthwise_conv(*tensors, reverse=reverse)

    fn = ms.jit(conv) if compiled else conv
    args = tuple(ms.Tensor(v) for v in (x, weight, bias))
    np.testing.assert_allclose(fn(*args).asnumpy(), expected, rtol=1e-5, atol=1e-5)

    def formula(x, weight, bias):
        zeros = mint.zeros((2, 3, 5))
        padded = mint.cat([x, zeros] if reverse else [zeros, x], dim=1)
        return sum(padded[:, (3 - k if reverse else k):(3 - k if reverse else k) + 9] * weight[k]
                   for k in range(4)) + bias

    got = ms.grad(lambda *t: (fn(*t) * ms.Tensor(dy)).sum(), (0, 1, 2))(*args)
    want = ms.grad(lambda *t: (formula(*t) * ms.Tensor(dy)).sum(), (0, 1, 2))(*args)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.asnumpy(), w.asnumpy(), rtol=1e-5, atol=1e-5)
