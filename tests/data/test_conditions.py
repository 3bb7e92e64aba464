"""Condition inputs (mg.data.conditions): the known latent and its mask for image-to-video, continuation and
inpainting, and their errors."""
import numpy as np
import pytest

from mg.data.conditions import condition_input, first_frames, outside_region, region_on_latent_grid


def _latent():
    return np.random.default_rng(0).standard_normal((2, 4, 3, 4, 6)).astype(np.float32)


def test_first_frames_know_exactly_the_first_k_latent_frames():
    latent = _latent()
    for k in (1, 2, 3):
        cond = first_frames(latent, k)
        assert cond.shape == (2, 5, 3, 4, 6)
        np.testing.assert_array_equal(cond[:, :4, :k], latent[:, :, :k])
        assert not cond[:, :4, k:].any()
        assert (cond[:, 4, :k] == 1).all() and not cond[:, 4, k:].any()
    with pytest.raises(ValueError, match="1 to 3 latent frames of this video, not 4"):
        first_frames(latent, 4)


def test_inpainting_knows_everything_outside_the_region():
    latent = _latent()
    region = np.zeros((4, 6), np.float32)
    region[1:3, 2:5] = 1
    cond = outside_region(latent, region)
    known = cond[:, 4]
    assert (known[:, :, 1:3, 2:5] == 0).all() and known.sum() == 2 * 3 * (24 - 6)
    np.testing.assert_array_equal(cond[:, :4] * (1 - known[:, None]), np.zeros_like(latent))
    np.testing.assert_array_equal(cond[:, :4], latent * known[:, None])
    with pytest.raises(ValueError, match=r"must be \(T, H, W\) = \(3, 4, 6\) or \(H, W\) = \(4, 6\)"):
        outside_region(latent, np.zeros((5, 6)))


def test_a_pixel_region_never_shrinks_on_the_latent_grid():
    mask = np.zeros((17, 64, 64), np.float32)
    mask[3, 9, 17] = 1  # one pixel of frame 3
    grid = region_on_latent_grid(mask)
    assert grid.shape == (3, 8, 8) and grid.sum() == 1 and grid[0, 1, 2] == 1
    with pytest.raises(ValueError, match="60x64 pixels does not fall on the 8x8 latent grid"):
        region_on_latent_grid(np.zeros((1, 60, 64)))


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match=r"must be \(B, C, T, H, W\)"):
        condition_input(np.zeros((4, 3, 4, 6)), 1.0)
    with pytest.raises(ValueError, match="only 0 .unknown. and 1 .known."):
        condition_input(_latent(), 0.5)


def test_condition_tasks_draw_each_kind_and_only_valid_ones():
    from mg.data.conditions import ConditionTasks
    latent = np.random.default_rng(1).standard_normal((400, 2, 3, 4, 4)).astype(np.float32)
    known = ConditionTasks(none=0.5, first_frames=0.3, region=0.2).draw(latent, np.random.default_rng(2))[:, 2]
    nothing = ~known.any(axis=(1, 2, 3))
    whole, some = known.all(axis=(2, 3)), known.any(axis=(2, 3))  # (B, T): frames fully / partly known
    first = ((whole == some).all(axis=1) & whole[:, 0] & ~whole[:, -1]
             & (np.diff(whole.astype(int), axis=1) <= 0).all(axis=1))
    region = ~nothing & ~first
    assert 0.4 < nothing.mean() < 0.6 and 0.2 < first.mean() < 0.4 and 0.12 < region.mean() < 0.28
    for sample in known[region]:  # a box unknown in every frame, the rest known
        assert (sample == sample[0]).all() and 0 < (sample[0] == 0).sum() < 16
    images = ConditionTasks(none=0.0, first_frames=1.0, region=0.0).draw(latent[:, :, :1], np.random.default_rng(3))
    assert not images[:, 2].any()  # an image has no first frames to give: nothing known
    with pytest.raises(ValueError, match="sum to 1"):
        ConditionTasks(none=0.5, first_frames=0.3, region=0.3)
