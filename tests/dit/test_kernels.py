import mindspore as ms
import numpy as np
import pytest

from mg.models.dit.kernels import attention, rms_norm, use_fused_kernels


@pytest.mark.parametrize("device, fused", [("Ascend", True), ("CPU", False), ("GPU", False)])
def test_fused_kernels_are_chosen_only_on_ascend(device, fused):
    assert use_fused_kernels(device) is fused


def test_current_cpu_context_uses_the_plain_path():
    assert use_fused_kernels() is False


def numpy_attention(q, k, v, mask):
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if mask is not None:
        scores = np.where(mask[:, None, None, :] > 0, scores, -np.inf)
    scores = scores - scores.max(-1, keepdims=True)
    weights = np.exp(scores)
    weights /= weights.sum(-1, keepdims=True)
    return weights @ v


def test_attention_matches_numpy_with_and_without_key_padding():
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 3, n, 8)).astype(np.float32) for n in (5, 7, 7))
    mask = np.array([[1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 0]], np.float32)
    for m in (None, mask):
        out = attention(ms.Tensor(q), ms.Tensor(k), ms.Tensor(v), None if m is None else ms.Tensor(m), fused=False)
        np.testing.assert_allclose(out.asnumpy(), numpy_attention(q, k, v, m), rtol=1e-5, atol=1e-5)


def test_attention_over_only_padding_returns_zeros():
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 2, 3, 4)).astype(np.float32) for _ in range(3))
    mask = np.array([[0, 0, 0], [1, 0, 0]], np.float32)
    out = attention(ms.Tensor(q), ms.Tensor(k), ms.Tensor(v), ms.Tensor(mask), fused=False).asnumpy()
    assert np.abs(out[0]).max() == 0.0
    np.testing.assert_allclose(out[1], np.broadcast_to(v[1, :, :1, :], out[1].shape), rtol=1e-6)


def test_rms_norm_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 16)).astype(np.float32) * 3
    w = rng.standard_normal(16).astype(np.float32)
    expected = x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-6) * w
    out = rms_norm(ms.Tensor(x), ms.Parameter(ms.Tensor(w), name="w"), 1e-6, fused=False)
    np.testing.assert_allclose(out.asnumpy(), expected, rtol=1e-5, atol=1e-5)
