"""The plain path's gather + matmul convolution equals MindSpore's conv3d, forward and gradients, for every geometry the
TAE and its losses use (zero / replicate padding, strides, nearest upsampling folded in); so does the fused path,
whose conv3d runs on CPU too."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import ops

from mg.backends import Conv3dKernel, ConvGeometry, permute, use_backend


def to_channels_last(x):
    return permute(x, (0, 2, 3, 4, 1))


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
    gather = Conv3dKernel(geometry)
    for backend in ("plain", "fused"):
        with use_backend(backend):
            out = Conv3dKernel(geometry)(ms.Tensor(x), ms.Tensor(w), ms.Tensor(b))
        assert out.shape == ref.shape
        np.testing.assert_allclose(out.asnumpy(), ref.asnumpy(), rtol=1e-5, atol=1e-4, err_msg=backend)

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
