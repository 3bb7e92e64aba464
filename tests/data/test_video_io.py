"""Decoding real files: mp4 (decord and the OpenCV fallback), PNG/JPEG, and bad files."""
import numpy as np
import pytest

from mg.data.video_io import DecodeError, _read_with_opencv, probe, read_frames


def test_probe_reports_what_was_written(media):
    info = probe(media.path(media.landscape))
    assert (info.num_frames, info.height, info.width) == (40, 48, 64)
    assert info.fps == pytest.approx(20.0)
    image = probe(media.path(media.image_jpg))
    assert (image.num_frames, image.height, image.width) == (1, 30, 60)


def test_read_frames_returns_the_requested_frames(media, grey_level):
    frames = read_frames(media.path(media.landscape), [0, 5, 17, 39])
    assert frames.shape == (4, 48, 64, 3) and frames.dtype == np.uint8
    assert [grey_level(f) for f in frames] == [0, 5, 17, 39]


def test_opencv_fallback_matches_decord(media):
    indices = np.array([1, 2, 20])
    by_decord = read_frames(media.path(media.portrait), indices)
    by_opencv = _read_with_opencv(media.path(media.portrait), indices)
    np.testing.assert_array_equal(by_decord, by_opencv)


def test_png_is_read_exactly_as_rgb(media, png_pattern):
    frames = read_frames(media.path(media.image_png), [0])
    assert frames.shape == (1, 40, 40, 3)
    np.testing.assert_array_equal(frames[0], png_pattern)


@pytest.mark.parametrize("name", ["corrupt", "missing", "truncated"])
def test_bad_files_raise_decode_error_naming_the_file(media, name):
    path = media.path(getattr(media, name))
    with pytest.raises(DecodeError, match=path):
        read_frames(path, np.arange(0, 40, 3))


def test_too_few_frames_is_an_error(media):
    with pytest.raises(DecodeError, match="24 frames"):
        read_frames(media.path(media.portrait), [0, 24])
