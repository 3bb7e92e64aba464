"""The gather + matmul convolution equals MindSpore's own conv3d kernel, forward and gradients, for every geometry the
TAE and its losses use (zero / replicate padding, strides, nearest upsampling folded in)."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import ops

from mg.models.tae.conv import (ConvGeometry, FusedConv3d, GatherConv3d, TemporalConv, select_conv3d,
                                to_channels_first, to_channels_last)

GEOMETRIES = {
    "spatial": ((1, 3, 3), (1, 1, 1), (0, 0, 1, 1, 1, 1), (False,) * 3, (1, 1, 1)),
    "temporal_replicate": ((3, 1, 1), (1, 1, 1), (1, 1, 0, 0, 0, 0), (True, False, False), (1, 1, 1)),
    "temporal_down": ((3, 1, 1), (2, 1, 1), (1, 1, 0, 0, 0, 0), (True, False, False), (1, 1, 1)),
    "spatial_down_asymmetric": ((1, 3, 3), (1, 2, 2), (0, 0, 0, 1, 0, 1), (False,) * 3, (1, 1, 1)),
    "full_3d": ((3, 3, 3), (1, 1, 1), (1, 1, 1, 1, 1, 1), (False,) * 3, (1, 1, 1)),
    "spatial_upsample": ((1, 3, 3), (1, 1, 1), (0, 0, 1, 1, 1, 1), (False,) * 3, (1, 2, 2)),
    "temporal_upsample": ((3, 1, 1), (1, 1, 1), (1, 1, 0, 0, 0, 0), (True, False, False), (2, 1, 1)),
    "patch_4x4_stride2": ((1, 4, 4), (1, 2, 2), (0, 0, 1, 1, 1, 1), (False,) * 3, (1, 1, 1)),
    "pointwise": ((1, 1, 1), (1, 1, 1), (0,) * 6, (False,) * 3, (1, 1, 1)),
}


def _reference(x, w, b, geometry):
    """ops.conv3d on channels-first input, upsampled and padded explicitly with NumPy."""
    x = np.transpose(x, (0, 4, 1, 2, 3))
    for axis, factor in enumerate(geometry.upsample):
        x = np.repeat(x, factor, axis=axis + 2)
    for axis, replicate in enumerate(geometry.replicate):
        pads = [(0, 0)] * 5
        pads[axis + 2] = geometry.padding[2 * axis:2 * axis + 2]
        x = np.pad(x, pads, mode="edge" if replicate else "constant")
    out = ops.conv3d(ms.Tensor(x), ms.Tensor(w), stride=geometry.stride, pad_mode="valid")
    return to_channels_last(out) + ms.Tensor(b)


@pytest.mark.parametrize("frames", [1, 5])
@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_gather_conv_matches_conv3d_forward_and_gradients(name, frames):
    geometry = ConvGeometry(*GEOMETRIES[name])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, frames, 7, 6, 5)).astype(np.float32)
    w = rng.standard_normal((4, 5, *geometry.kernel)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    ref = _reference(x, w, b, geometry)
    gather = GatherConv3d(geometry)
    for impl in (gather, FusedConv3d(geometry)):
        out = impl(ms.Tensor(x), ms.Tensor(w), ms.Tensor(b))
        assert out.shape == ref.shape
        np.testing.assert_allclose(out.asnumpy(), ref.asnumpy(), rtol=1e-5, atol=1e-4)

    probe = ms.Tensor(rng.standard_normal(ref.shape).astype(np.float32))
    got = ms.grad(lambda x, w, b: (gather(x, w, b) * probe).sum(), grad_position=(0, 1, 2))(
        ms.Tensor(x), ms.Tensor(w), ms.Tensor(b))
    # the reference gradient: autodiff of ops.conv3d on the explicitly upsampled/padded input, mapped back by NumPy
    # (upsampling sums the gradient of the copies; replicate padding adds the pad's gradient to the edge frame)
    want_w = ms.grad(lambda w: (_reference(x, w, b, geometry) * probe).sum())(ms.Tensor(w))
    np.testing.assert_allclose(got[1].asnumpy(), want_w.asnumpy(), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(got[2].asnumpy(), probe.asnumpy().reshape(-1, 4).sum(0), rtol=1e-4, atol=1e-3)
    eps, flat = 1e-2, rng.integers(0, x.size, 6)
    for i in flat:  # central differences of the (linear) convolution at a few input elements
        dx = np.zeros(x.size, np.float32)
        dx[i] = eps
        dx = dx.reshape(x.shape)
        plus = (_reference(x + dx, w, b, geometry) * probe).sum().asnumpy()
        minus = (_reference(x - dx, w, b, geometry) * probe).sum().asnumpy()
        np.testing.assert_allclose(got[0].asnumpy().reshape(-1)[i], (plus - minus) / (2 * eps), rtol=2e-2, atol=2e-2)


def test_device_selection():
    assert select_conv3d("CPU") is GatherConv3d
    assert select_conv3d("Ascend") is FusedConv3d


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
