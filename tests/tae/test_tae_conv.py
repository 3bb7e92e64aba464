"""The matmul convolution equals MindSpore's own conv kernels, forward and gradients."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import ops

from mg.models.tae.conv import _conv3d_fused, _conv3d_matmul, select_conv3d, TemporalConv


def _grads(fn, x, w, b):
    return ms.grad(lambda x, w, b: (fn(x, w, b) * ms.Tensor(_PROBE)).sum(), grad_position=(0, 1, 2))(x, w, b)


_PROBE = None


@pytest.mark.parametrize("kernel,stride,padding", [
    ((1, 3, 3), (1, 1, 1), (0, 0, 1, 1, 1, 1)),   # spatial conv
    ((3, 1, 1), (1, 1, 1), (0, 0, 0, 0, 0, 0)),   # temporal conv (padding done by replication outside)
    ((3, 1, 1), (2, 1, 1), (0, 0, 0, 0, 0, 0)),   # temporal downsampling
    ((1, 3, 3), (1, 2, 2), (0, 0, 0, 1, 0, 1)),   # spatial downsampling with diffusers' asymmetric pad
    ((3, 3, 3), (1, 1, 1), (1, 1, 1, 1, 1, 1)),   # full 3-D kernel
    ((1, 1, 1), (1, 1, 1), (0, 0, 0, 0, 0, 0)),   # 1x1
])
@pytest.mark.parametrize("batch", [1, 2])
def test_matmul_conv_matches_ops_conv3d(kernel, stride, padding, batch):
    global _PROBE
    rng = np.random.default_rng(0)
    x = ms.Tensor(rng.standard_normal((batch, 5, 7, 9, 6)).astype(np.float32))
    w = ms.Tensor(rng.standard_normal((4, 5, *kernel)).astype(np.float32))
    b = ms.Tensor(rng.standard_normal(4).astype(np.float32))
    xp = ops.pad(x, (padding[4], padding[5], padding[2], padding[3], padding[0], padding[1]))
    ref = ops.conv3d(xp, w, stride=stride, pad_mode="valid") + b.reshape(1, -1, 1, 1, 1)
    out = _conv3d_matmul(x, w, b, stride, padding)
    np.testing.assert_allclose(out.asnumpy(), ref.asnumpy(), rtol=1e-5, atol=1e-4)
    _PROBE = rng.standard_normal(ref.shape).astype(np.float32)
    g_ref = _grads(lambda x, w, b: _conv3d_fused(x, w, b, stride, padding), x, w, b)
    g_out = _grads(lambda x, w, b: _conv3d_matmul(x, w, b, stride, padding), x, w, b)
    for got, want in zip(g_out, g_ref):
        np.testing.assert_allclose(got.asnumpy(), want.asnumpy(), rtol=1e-5, atol=1e-4)


def test_matmul_conv_matches_ops_conv2d_and_conv1d():
    rng = np.random.default_rng(1)
    img = rng.standard_normal((2, 3, 10, 8)).astype(np.float32)
    w2 = rng.standard_normal((6, 3, 3, 3)).astype(np.float32)
    ref2 = ops.conv2d(ms.Tensor(img), ms.Tensor(w2), pad_mode="pad", padding=1)
    out2 = _conv3d_matmul(ms.Tensor(img[:, :, None]), ms.Tensor(w2[:, :, None]), None, (1, 1, 1), (0, 0, 1, 1, 1, 1))
    np.testing.assert_allclose(out2.asnumpy()[:, :, 0], ref2.asnumpy(), rtol=1e-5, atol=1e-4)
    seq = rng.standard_normal((2, 3, 11)).astype(np.float32)
    w1 = rng.standard_normal((4, 3, 3)).astype(np.float32)
    ref1 = ops.conv1d(ms.Tensor(seq), ms.Tensor(w1), stride=2, pad_mode="valid")
    out1 = _conv3d_matmul(ms.Tensor(seq[:, :, :, None, None]), ms.Tensor(w1[:, :, :, None, None]), None,
                          (2, 1, 1), (0,) * 6)
    np.testing.assert_allclose(out1.asnumpy()[..., 0, 0], ref1.asnumpy(), rtol=1e-5, atol=1e-4)


def test_device_selection():
    assert select_conv3d("CPU") is _conv3d_matmul
    assert select_conv3d("Ascend") is _conv3d_fused


def test_temporal_conv_is_identity_at_init_and_replicates_edges():
    x = np.random.default_rng(2).standard_normal((1, 4, 5, 2, 3)).astype(np.float32)
    conv = TemporalConv(4)
    np.testing.assert_allclose(conv(ms.Tensor(x)).asnumpy(), x, atol=1e-6)
    down = TemporalConv(4, stride=2)
    np.testing.assert_allclose(down(ms.Tensor(x)).asnumpy(), x[:, :, ::2], atol=1e-6)
    # replicate padding: a kernel that takes the previous frame returns frame 0 at t=0
    w = np.zeros((4, 4, 3, 1, 1), np.float32)
    w[np.arange(4), np.arange(4), 0] = 1
    conv.conv.weight.set_data(ms.Tensor(w))
    out = conv(ms.Tensor(x)).asnumpy()
    np.testing.assert_allclose(out[:, :, 0], x[:, :, 0], atol=1e-6)
    np.testing.assert_allclose(out[:, :, 1:], x[:, :, :-1], atol=1e-6)


def test_temporal_conv_single_frame_shortcut_equals_replicated_input():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 1, 3, 2)).astype(np.float32)
    for stride in (1, 2):
        conv = TemporalConv(4, stride=stride)
        conv.conv.weight.set_data(ms.Tensor(rng.standard_normal((4, 4, 3, 1, 1)).astype(np.float32)))
        w = conv.conv.weight.asnumpy()[..., 0, 0]
        want = np.einsum("ock,bcthw->bothw", w, x) + conv.conv.bias.asnumpy().reshape(1, -1, 1, 1, 1)
        np.testing.assert_allclose(conv(ms.Tensor(x)).asnumpy(), want, rtol=1e-5, atol=1e-5)
