"""Bucket specs and the bucket a sample goes to."""
import pytest

from mg.data.buckets import Bucket, assign_bucket, parse_buckets

BUCKETS = [
    Bucket(32, 32, 1, 4),  # 0 square image
    Bucket(32, 48, 1, 4),  # 1 wide image
    Bucket(32, 32, 8, 2),  # 2 square video, 8 frames
    Bucket(32, 48, 8, 2),  # 3 wide video, 8 frames
    Bucket(32, 48, 16, 1),  # 4 wide video, 16 frames
    Bucket(48, 32, 8, 2),  # 5 tall video
]


def test_images_go_to_the_nearest_aspect_image_bucket():
    assert assign_bucket(100, 100, None, BUCKETS) == 0
    assert assign_bucket(60, 100, None, BUCKETS) == 1  # 0.6 is nearer 2/3 than 1 in log scale
    assert assign_bucket(100, 80, None, BUCKETS) == 0  # tall image: only image buckets are candidates


def test_videos_get_the_longest_clip_they_fill_at_the_nearest_aspect():
    assert assign_bucket(64, 96, 40, BUCKETS) == 4
    assert assign_bucket(64, 96, 12, BUCKETS) == 3  # cannot fill 16 frames
    assert assign_bucket(96, 64, 8, BUCKETS) == 5
    assert assign_bucket(96, 64, 7, BUCKETS) is None  # too short for every video bucket


def test_step_changes_what_a_video_can_fill():
    # 8 frames every 2nd source frame cover 15 source frames.
    assert assign_bucket(64, 96, 15, BUCKETS, step=2.0) == 3
    assert assign_bucket(64, 96, 14, BUCKETS, step=2.0) is None


def test_parse_accepts_dicts_and_rejects_bad_specs():
    assert parse_buckets([{"height": 16, "width": 24, "frames": 1, "batch_size": 3}]) == [Bucket(16, 24, 1, 3)]
    with pytest.raises(ValueError, match="at least one"):
        parse_buckets([])
    with pytest.raises(ValueError, match=r"buckets\[0\].*missing keys \['batch_size'\]"):
        parse_buckets([{"height": 16, "width": 24, "frames": 1}])
    with pytest.raises(ValueError, match=r"buckets\[1\]\.batch_size"):
        parse_buckets([Bucket(16, 16, 1, 1), Bucket(16, 16, 8, 0)])
    with pytest.raises(ValueError, match="multiples of 8"):
        parse_buckets([Bucket(20, 16, 1, 1)])
    with pytest.raises(ValueError, match="appears twice"):
        parse_buckets([Bucket(16, 16, 1, 1), Bucket(16, 16, 1, 2)])
