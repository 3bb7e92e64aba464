"""The plain path's kernels (mg/backends) against the plain formulas, differentiated by MindSpore's autodiff or
written in NumPy: forward values and every gradient, in PyNative and under jit; and the fused path where its
operators run on CPU (linear)."""
import mindspore as ms
from mindspore import mint
import numpy as np
import pytest

import mg.backends.mha as mha
from mg.backends import (FROM_FEATURE_MAJOR, TO_FEATURE_MAJOR, RMSNormKernel, attention, gated_add, linear, modulate,
                         use_backend)


def numpy_attention(q, k, v, mask):
    """q (B, H, N, Dh), k and v (B, H, L, Dh): the textbook layout."""
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if mask is not None:
        scores = np.where(mask[:, None, None, :] > 0, scores, -np.inf)
    scores = scores - scores.max(-1, keepdims=True)
    weights = np.exp(scores)
    weights /= weights.sum(-1, keepdims=True)
    return weights @ v


def plain_layout(x):
    """(B, H, N, Dh) <-> (B, H, Dh, N), the plain path's layout."""
    return np.swapaxes(x, -1, -2)


def test_attention_matches_numpy_with_and_without_key_padding():
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 3, n, 8)).astype(np.float32) for n in (5, 7, 7))
    mask = np.array([[1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 0]], np.float32)
    for m in (None, mask):
        out = attention(*(ms.Tensor(plain_layout(t)) for t in (q, k, v)), None if m is None else ms.Tensor(m), 8)
        np.testing.assert_allclose(plain_layout(out.asnumpy()), numpy_attention(q, k, v, m), rtol=1e-5, atol=1e-5)


def test_attention_over_only_padding_returns_zeros():
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 2, 4, 3)).astype(np.float32) for _ in range(3))  # (B, H, Dh, N)
    mask = np.array([[0, 0, 0], [1, 0, 0]], np.float32)
    out = attention(ms.Tensor(q), ms.Tensor(k), ms.Tensor(v), ms.Tensor(mask), 4).asnumpy()
    assert np.abs(out[0]).max() == 0.0
    np.testing.assert_allclose(out[1], np.broadcast_to(v[1, :, :, :1], out[1].shape), rtol=1e-6)


def test_rms_norm_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 16)).astype(np.float32) * 3
    w = rng.standard_normal(16).astype(np.float32)
    expected = x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-6) * w
    out = RMSNormKernel(1e-6)(ms.Tensor(x), ms.Parameter(ms.Tensor(w), name="w"))
    np.testing.assert_allclose(out.asnumpy(), expected, rtol=1e-5, atol=1e-5)


def autodiff_attention(q, k, v, mask):
    """The plain formula on (B, H, Dh, N) heads, differentiated by MindSpore's autodiff: the reference for the
    hand-written backward."""
    scores = mint.matmul(mint.transpose(q, -1, -2), k) * q.shape[-2] ** -0.5
    if mask is not None:
        scores = scores + ((1.0 - mask) * -1e9)[:, None, None, :]
    out = mint.matmul(v, mint.transpose(mint.softmax(scores, dim=-1), -1, -2))
    if mask is not None:
        out = out * (mask.sum(axis=-1) > 0).astype(out.dtype)[:, None, None, None]
    return out


def attention_gradients(fn, q, k, v, mask, cotangent, jit):
    def loss(q, k, v):
        return (fn(q, k, v, mask) * cotangent).sum()
    grad = ms.grad(loss, grad_position=(0, 1, 2))
    if jit:
        grad = ms.jit(grad)
    return [g.asnumpy() for g in grad(q, k, v)]


def plain_attention(q, k, v, mask):
    return attention(q, k, v, mask, q.shape[2])


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("chunked", [False, True])
def test_attention_backward_matches_autodiff(jit, masked, chunked, monkeypatch):
    if chunked:  # 2 queries per chunk: the 6 queries run as 3 chunks, forward and backward
        monkeypatch.setattr(mha, "CHUNK_SCORES", 2 * 3 * 5 * 2)
    rng = np.random.default_rng(1)
    q, k, v = (ms.Tensor(rng.standard_normal((2, 3, 8, n)).astype(np.float32)) for n in (6, 5, 5))
    cotangent = ms.Tensor(rng.standard_normal((2, 3, 8, 6)).astype(np.float32))
    # second sample: every key is padding, so its output and every gradient through it is zero
    mask = ms.Tensor(np.array([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]], np.float32)) if masked else None
    ours = attention_gradients(plain_attention, q, k, v, mask, cotangent, jit)
    reference = attention_gradients(autodiff_attention, q, k, v, mask, cotangent, jit)
    np.testing.assert_allclose(plain_attention(q, k, v, mask).asnumpy(), autodiff_attention(q, k, v, mask).asnumpy(),
                               rtol=1e-5, atol=1e-6)
    for name, got, want in zip("qkv", ours, reference):
        assert np.abs(want).max() > 1e-3, name  # the check is not vacuous
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=f"d{name}")
    if masked:
        assert all(np.abs(g[1]).max() == 0.0 for g in ours)
        assert np.abs(ours[1][0, ..., 3:]).max() == 0.0  # padded keys get no gradient


def autodiff_rms_norm(x, w):
    return x * mint.rsqrt(mint.mean(x * x, dim=-1, keepdim=True) + 1e-6) * w


def plain_rms_norm(x, w):
    return RMSNormKernel(1e-6)(x, w)


def plain_dense(x, w, b):
    return linear(x, w, b)


def autodiff_dense(x, w, b):
    return mint.matmul(x, w.T) + b


def plain_dense_to_feature_major(x, w, b):
    return linear(x, w, b, layout=TO_FEATURE_MAJOR)


def autodiff_dense_to_feature_major(x, w, b):
    return mint.transpose(mint.matmul(x, w.T) + b, 1, 2)


def plain_dense_from_feature_major(x, w, b):
    return linear(x, w, b, layout=FROM_FEATURE_MAJOR)


def autodiff_dense_from_feature_major(x, w, b):
    return mint.matmul(mint.transpose(x, 1, 2), w.T) + b


def autodiff_modulate(x, shift, scale):
    return x * (1 + scale) + shift


def autodiff_gated_add(x, gate, y):
    return x + gate * y


def gradients(fn, inputs, cotangent, jit):
    def loss(*args):
        return (fn(*args) * cotangent).sum()
    grad = ms.grad(loss, grad_position=tuple(range(len(inputs))))
    if jit:
        grad = ms.jit(grad)
    return [g.asnumpy() for g in grad(*inputs)]


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("ours, reference, shapes", [
    (plain_rms_norm, autodiff_rms_norm, [(2, 5, 16), (16,)]),
    (plain_dense, autodiff_dense, [(2, 5, 16), (8, 16), (8,)]),
    (plain_dense_to_feature_major, autodiff_dense_to_feature_major, [(2, 5, 16), (8, 16), (8,)]),
    (plain_dense_from_feature_major, autodiff_dense_from_feature_major, [(2, 16, 5), (8, 16), (8,)]),
    (modulate, autodiff_modulate, [(2, 5, 16), (2, 1, 16), (2, 1, 16)]),
    (gated_add, autodiff_gated_add, [(2, 5, 16), (2, 1, 16), (2, 5, 16)]),
])
def test_hand_written_backwards_match_autodiff(ours, reference, shapes, jit):
    rng = np.random.default_rng(2)
    inputs = [ms.Tensor(rng.standard_normal(s).astype(np.float32) * 2) for s in shapes]
    out = ours(*inputs).asnumpy()
    np.testing.assert_allclose(out, reference(*inputs).asnumpy(), rtol=1e-5, atol=1e-5)
    cotangent = ms.Tensor(rng.standard_normal(out.shape).astype(np.float32))
    for i, (got, want) in enumerate(zip(gradients(ours, inputs, cotangent, jit),
                                        gradients(reference, inputs, cotangent, jit))):
        assert got.shape == want.shape and np.abs(want).max() > 1e-3
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=f"input {i}")


@pytest.mark.parametrize("jit", [False, True])
def test_fused_linear_equals_the_plain_one(jit):
    """mint's linear, the fused path's dense layer, runs on CPU too: both paths give the same values and gradients."""
    rng = np.random.default_rng(3)
    inputs = [ms.Tensor(rng.standard_normal(s).astype(np.float32)) for s in [(2, 5, 16), (8, 16), (8,)]]
    cotangent = ms.Tensor(rng.standard_normal((2, 5, 8)).astype(np.float32))
    results = {}
    for backend in ("plain", "fused"):
        with use_backend(backend):
            results[backend] = [linear(*inputs).asnumpy()] + gradients(linear, inputs, cotangent, jit)
    for plain, fused in zip(results["plain"], results["fused"]):
        np.testing.assert_allclose(plain, fused, rtol=1e-5, atol=1e-5)
