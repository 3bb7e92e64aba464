"""Frame sampling, resize + centre crop and the [-1, 1] range, against closed forms."""
import numpy as np
import pytest

from mg.data.transforms import clip_indices, frame_step, resize_center_crop, span, to_model_range


def test_frame_step_modes():
    assert frame_step(30.0, target_fps=15) == (2.0, 15.0)
    assert frame_step(24.0, target_fps=16) == (1.5, 16.0)
    assert frame_step(30.0, frame_stride=3) == (3.0, 10.0)
    assert frame_step(25.0) == (1.0, 25.0)
    with pytest.raises(ValueError, match="not both"):
        frame_step(30.0, target_fps=15, frame_stride=2)
    with pytest.raises(ValueError, match="frame_stride"):
        frame_step(30.0, frame_stride=0)


def test_clip_indices_at_target_fps():
    # 24 -> 16 FPS: step 1.5, 4 frames cover floor(3 * 1.5) + 1 = 5 source frames.
    assert span(4, 1.5) == 5
    np.testing.assert_array_equal(clip_indices(5, 4, 1.5, 0.0), [0, 1, 3, 4])
    np.testing.assert_array_equal(clip_indices(10, 4, 1.5, 0.0), [0, 1, 3, 4])
    np.testing.assert_array_equal(clip_indices(10, 4, 1.5, 1.0), [5, 6, 8, 9])
    np.testing.assert_array_equal(clip_indices(11, 3, 2.0, 0.5), [3, 5, 7])
    with pytest.raises(ValueError, match="need 5 source frames"):
        clip_indices(4, 4, 1.5)


def test_resize_keeps_aspect_and_crops_the_centre():
    # 40x80: left half black, right half white, with a 4-pixel red border column on each side.
    frame = np.zeros((1, 40, 80, 3), np.uint8)
    frame[:, :, 40:] = 255
    frame[:, :, :4] = (255, 0, 0)
    frame[:, :, -4:] = (255, 0, 0)
    out = resize_center_crop(frame, 32, 32)  # scale 0.8 -> 32x64, keep columns 16..47
    assert out.shape == (1, 32, 32, 3)
    assert (out[0, :, :15] == 0).all() and (out[0, :, 17:] == 255).all()  # no red: the sides were cropped


def test_upscale_of_a_constant_frame_is_constant():
    frame = np.full((2, 10, 20, 3), 77, np.uint8)
    out = resize_center_crop(frame, 24, 24)
    assert out.shape == (2, 24, 24, 3) and (out == 77).all()


def test_model_range_and_layout():
    frames = np.zeros((2, 3, 4, 3), np.uint8)
    frames[1, ..., 0] = 255
    x = to_model_range(frames)
    assert x.shape == (3, 2, 3, 4) and x.dtype == np.float32
    assert (x[0, 1] == 1.0).all() and (x[1:, 1] == -1.0).all() and (x[:, 0] == -1.0).all()
