"""The DiT's attention layers against multi-head attention written in numpy from the same weights.

The plain path lays heads out (B, H, Dh, N) and never splits rows into heads, so these check that its heads are the
textbook ones (head i = features i * Dh to (i + 1) * Dh of q, k and v, which the fused path's BSH layout also
assumes): the same weights must mean the same model on either path."""
import mindspore as ms
import numpy as np

from mg.models.dit.layers import CrossAttention, SelfAttention

HEADS, DIM = 4, 32


def numpy_heads(x):
    """(B, N, H * Dh) -> (B, H, N, Dh)"""
    b, n, _ = x.shape
    return x.reshape(b, n, HEADS, -1).transpose(0, 2, 1, 3)


def numpy_multi_head(x, context, mask, q_weight, kv_weight, proj_weight):
    q = numpy_heads(x @ q_weight.T)
    k, v = (numpy_heads(t) for t in np.split(context @ kv_weight.T, 2, axis=-1))
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(DIM // HEADS)
    if mask is not None:
        scores = np.where(mask[:, None, None, :] > 0, scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    out = (weights / weights.sum(-1, keepdims=True)) @ v
    b, _, n, _ = out.shape
    return out.transpose(0, 2, 1, 3).reshape(b, n, DIM) @ proj_weight.T


def random_weights(layer, rng):
    for p in layer.trainable_params():
        p.set_data(ms.Tensor(rng.normal(0, 0.3, p.shape).astype(np.float32)))
    return {p.name.split(".")[0]: p.asnumpy() for p in layer.trainable_params()}


def test_self_attention_matches_numpy_multi_head_attention():
    rng = np.random.default_rng(0)
    layer = SelfAttention(DIM, HEADS)
    w = random_weights(layer, rng)
    x = rng.standard_normal((2, 6, DIM)).astype(np.float32)
    q_weight, kv_weight = w["qkv"][:DIM], w["qkv"][DIM:]
    expected = numpy_multi_head(x, x, None, q_weight, kv_weight, w["proj"])
    np.testing.assert_allclose(layer(ms.Tensor(x)).asnumpy(), expected, rtol=1e-4, atol=1e-5)


def test_cross_attention_matches_numpy_multi_head_attention_with_padding():
    rng = np.random.default_rng(1)
    layer = CrossAttention(DIM, HEADS)
    w = random_weights(layer, rng)
    x = rng.standard_normal((2, 6, DIM)).astype(np.float32)
    context = rng.standard_normal((2, 5, DIM)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.float32)
    expected = numpy_multi_head(x, context, mask, w["q"], w["kv"], w["proj"])
    out = layer(ms.Tensor(x), ms.Tensor(context), ms.Tensor(mask)).asnumpy()
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
