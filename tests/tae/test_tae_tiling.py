"""Temporal tiling: tile plans, linear-ramp blending and agreement with untiled encode/decode."""
import mindspore as ms
import numpy as np
import pytest

from mg.models.tae import TemporalAutoencoder, tae_config
from mg.models.tae.tiling import blend_weights, decode_tiles


def test_decode_tile_plan_overlaps_exactly():
    assert decode_tiles(3, 4, 2) == [(0, 3)]
    assert decode_tiles(8, 4, 2) == [(0, 4), (2, 6), (4, 8)]
    assert decode_tiles(9, 4, 2) == [(0, 4), (2, 6), (4, 8), (6, 9)]
    w = blend_weights(8, 3, 3)
    np.testing.assert_allclose(w, [0.25, 0.5, 0.75, 1, 1, 0.75, 0.5, 0.25])
    np.testing.assert_allclose(blend_weights(8, 3, 3)[-3:] + blend_weights(8, 3, 0)[:3], 1.0)


def test_tiled_decode_blends_with_linear_ramps(monkeypatch):
    """Each tile decodes to a constant (its index): the overlap must ramp linearly from one to the next."""
    tae = TemporalAutoencoder(tae_config("tiny"))
    calls = []

    def fake_decode(z):
        calls.append(z.shape[2])
        return ms.Tensor(np.full((1, 3, 8 * z.shape[2], 2, 2), float(len(calls) - 1), np.float32))

    monkeypatch.setattr(tae, "_decode_frames", fake_decode)
    out = tae.decode(ms.Tensor(np.zeros((1, 16, 6, 1, 1), np.float32)), 48, tiled=True).asnumpy()[0, 0, :, 0, 0]
    assert calls == [4, 4]                        # latent tiles [0, 4) and [2, 6): 16 overlapping frames
    ramp = np.arange(1, 17) / 17.0                # weight of the later tile across the overlap
    np.testing.assert_allclose(out[:16], 0.0)
    np.testing.assert_allclose(out[16:32], ramp, rtol=1e-6)
    np.testing.assert_allclose(out[32:], 1.0)


@pytest.fixture(scope="module")
def perturbed_tiny_tae():
    """A tiny TAE whose temporal convs are moved off the identity, so neighbouring frames really mix."""
    ms.set_device("CPU")
    ms.set_seed(0)
    tae = TemporalAutoencoder(tae_config("tiny"))
    rng = np.random.default_rng(0)
    for name, p in tae.parameters_and_names():
        if ".temporal." in name:
            p.set_data(ms.Tensor(p.asnumpy() + 0.01 * rng.standard_normal(p.shape).astype(np.float32)))
    return tae


def _smooth_video(frames, h=16, w=16):
    t = np.arange(frames)[:, None, None]
    yy, xx = np.mgrid[0:h, 0:w]
    video = np.stack([np.sin(0.3 * xx + 0.1 * t + c) * np.cos(0.2 * yy - 0.05 * t) for c in range(3)])
    return ms.Tensor(video[None].astype(np.float32))


def test_tiled_and_untiled_agree_closely(perturbed_tiny_tae):
    tae = perturbed_tiny_tae
    x = _smooth_video(64)
    mean, _ = tae.encode(x)
    mean_tiled, _ = tae.encode(x, tiled=True)
    assert mean.shape == mean_tiled.shape == (1, 16, 8, 2, 2)
    rel = np.linalg.norm(mean.asnumpy() - mean_tiled.asnumpy()) / np.linalg.norm(mean.asnumpy())
    assert rel < 0.05
    video = tae.decode(mean, 64).asnumpy()
    video_tiled = tae.decode(mean, 64, tiled=True).asnumpy()
    assert video_tiled.shape == (1, 3, 64, 16, 16)
    rel = np.linalg.norm(video - video_tiled) / np.linalg.norm(video)
    assert rel < 0.05
    # away from the blended overlap (frames 16-47) the tiles see the same context as the whole video
    np.testing.assert_allclose(video_tiled[:, :, :8], video[:, :, :8], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(video_tiled[:, :, -8:], video[:, :, -8:], rtol=1e-4, atol=1e-4)
    # a video no longer than one tile takes the untiled path exactly
    short = _smooth_video(17)
    np.testing.assert_array_equal(tae.encode(short)[0].asnumpy(), tae.encode(short, tiled=True)[0].asnumpy())
