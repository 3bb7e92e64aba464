"""The TAE's convolution layers: layout helpers, the temporal convolution's identity initialisation and replicate
padding, and its one-frame shortcut (the convolution itself: tests/backends/test_conv.py)."""
import mindspore as ms
import numpy as np
import pytest

from mg.models.tae.conv import TemporalConv, to_channels_first, to_channels_last


def test_layout_helpers_are_inverse():
    x = ms.Tensor(np.arange(2 * 3 * 4 * 5 * 6, dtype=np.float32).reshape(2, 3, 4, 5, 6))
    assert to_channels_last(x).shape == (2, 4, 5, 6, 3)
    np.testing.assert_array_equal(to_channels_first(to_channels_last(x)).asnumpy(), x.asnumpy())


def test_temporal_conv_is_identity_at_init_and_replicates_edges():
    x = np.random.default_rng(2).standard_normal((1, 5, 2, 3, 4)).astype(np.float32)  # (B, T, H, W, C)
    conv = TemporalConv(4)
    np.testing.assert_allclose(conv(ms.Tensor(x)).asnumpy(), x, atol=1e-6)
    down = TemporalConv(4, stride=2)
    np.testing.assert_allclose(down(ms.Tensor(x)).asnumpy(), x[:, ::2], atol=1e-6)
    up = TemporalConv(4, upsample=2)
    np.testing.assert_allclose(up(ms.Tensor(x)).asnumpy(), np.repeat(x, 2, axis=1), atol=1e-6)
    # replicate padding: a kernel that takes the previous frame returns frame 0 at t=0
    w = np.zeros((4, 4, 3, 1, 1), np.float32)
    w[np.arange(4), np.arange(4), 0] = 1
    conv.conv.weight.set_data(ms.Tensor(w))
    out = conv(ms.Tensor(x)).asnumpy()
    np.testing.assert_allclose(out[:, 0], x[:, 0], atol=1e-6)
    np.testing.assert_allclose(out[:, 1:], x[:, :-1], atol=1e-6)


def test_temporal_conv_on_one_frame_sums_the_kernel():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 1, 3, 2, 4)).astype(np.float32)
    for stride in (1, 2):
        conv = TemporalConv(4, stride=stride)
        conv.conv.weight.set_data(ms.Tensor(rng.standard_normal((4, 4, 3, 1, 1)).astype(np.float32)))
        w = conv.conv.weight.asnumpy()[..., 0, 0]
        want = np.einsum("ock,bthwc->bthwo", w, x) + conv.conv.bias.asnumpy()
        np.testing.assert_allclose(conv(ms.Tensor(x)).asnumpy(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride, upsample", [(1, 1), (2, 1), (1, 2)])
def test_one_frame_shortcut_equals_the_conv_on_a_static_clip(stride, upsample):
    """An image takes the summed-kernel shortcut; the gathered conv on the same frame repeated (a static clip) must
    give that frame at every output time, and the same weight gradient per frame."""
    rng = np.random.default_rng(4)
    conv = TemporalConv(4, stride=stride, upsample=upsample)
    conv.conv.weight.set_data(ms.Tensor(rng.standard_normal((4, 4, 3, 1, 1)).astype(np.float32)))
    frame = rng.standard_normal((2, 1, 3, 2, 4)).astype(np.float32)
    static = np.repeat(frame, 4, axis=1)
    dy = rng.standard_normal((2, 1, 3, 2, 4)).astype(np.float32)

    def loss(x):
        out = conv(x)
        return (out * ms.Tensor(np.repeat(dy, out.shape[1], axis=1))).sum(), out

    grad_fn = ms.value_and_grad(loss, 0, conv.trainable_params(), has_aux=True)
    (_, one), (dx_one, (dw_one, db_one)) = grad_fn(ms.Tensor(frame))
    (_, many), (dx_many, (dw_many, db_many)) = grad_fn(ms.Tensor(static))
    assert one.shape[1] == 1 and many.shape[1] == 4 * upsample // stride
    for t in range(many.shape[1]):
        np.testing.assert_allclose(many.asnumpy()[:, t], one.asnumpy()[:, 0], rtol=1e-5, atol=1e-5)
    per_frame = many.shape[1]
    np.testing.assert_allclose(dw_many.asnumpy() / per_frame, dw_one.asnumpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(db_many.asnumpy() / per_frame, db_one.asnumpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dx_many.asnumpy().sum(1) / per_frame, dx_one.asnumpy()[:, 0], rtol=1e-4, atol=1e-4)
