"""PSNR/SSIM against closed forms, and the synthetic moving-shape videos."""
import numpy as np
import pytest

from mg.models.tae.metrics import psnr, ssim
from mg.models.tae.synthetic import moving_shapes


def test_psnr_closed_form():
    x = np.zeros((3, 2, 8, 8))
    assert psnr(x, x + 0.1) == pytest.approx(20.0)       # MSE 0.01 -> 20 dB
    assert psnr(x, x) == float("inf")


def test_ssim_of_constant_images_and_identity():
    a, b = np.full((2, 16, 16), 0.2), np.full((2, 16, 16), 0.6)
    c1 = 0.01 ** 2
    assert ssim(a, b) == pytest.approx((2 * 0.2 * 0.6 + c1) / (0.2 ** 2 + 0.6 ** 2 + c1), rel=1e-6)
    x = np.random.default_rng(0).uniform(0, 1, (3, 4, 24, 24))
    assert ssim(x, x) == pytest.approx(1.0)
    noisy = [ssim(x, np.clip(x + s * np.random.default_rng(1).standard_normal(x.shape), 0, 1)) for s in (0.05, 0.2)]
    assert 1.0 > noisy[0] > noisy[1]


def test_moving_shapes_range_shape_and_motion():
    video = moving_shapes(np.random.default_rng(0), 2, 6, 32, 24)
    assert video.shape == (2, 3, 6, 32, 24) and video.dtype == np.float32
    assert video.min() >= -1 and video.max() <= 1
    assert np.abs(np.diff(video, axis=2)).max() > 0.1          # something moves
