"""Toy subjects: the classifiers read subject and placement back from renders (clean, and blurred and noisy as a TAE
decode leaves them), cross-paired references cannot be copied unnoticed, and the dataset writer keeps unseen
subjects out of training."""
import json

import cv2
import numpy as np
import pandas as pd
import pytest

from mg.data import toy_subjects as ts
from mg.data.toy_world import BACKGROUND, COLOURS, DIRECTIONS
from mg.data.video_io import read_frames


def _blurred(frames, rng, sigma=1.5, noise=4.0):
    """What a TAE decode roughly does to a render: Gaussian blur (sigma px) and a little noise."""
    out = np.stack([cv2.GaussianBlur(f, (0, 0), sigma) for f in frames]).astype(np.float32)
    return np.clip(np.round(out + rng.normal(0.0, noise, out.shape)), 0, 255).astype(np.uint8)


def _placements(rng, count, side=64):
    """`count` (x, y, size) of different sizes, anywhere in the frame."""
    for size in rng.choice(ts.REFERENCE_SIZES, count, replace=False):
        yield tuple(int(2 * rng.integers(0, (side - size) // 2 + 1)) for _ in "xy") + (int(size),)


def test_subjects_and_their_names():
    assert len(ts.ALL_SUBJECTS) == len(set(ts.ALL_SUBJECTS)) == 48
    assert ts.Subject.parse("checks-red-blue") == ts.Subject("checks", "red", "blue")
    assert ts.Subject("ring", "green", "yellow").name == "ring-green-yellow"
    for bad in ("checks-red-red", "stripes-red-blue", "checks-red"):
        with pytest.raises(ValueError):
            ts.Subject.parse(bad)
    unseen = ts.check_unseen(ts.DEFAULT_UNSEEN)
    assert len(set(unseen)) == 8 and set(unseen) <= set(ts.ALL_SUBJECTS)
    with pytest.raises(ValueError, match="ring"):
        ts.check_unseen([s for s in ts.ALL_SUBJECTS if s.pattern == "ring"])


def test_patterns_draw_where_described():
    frame = np.zeros((32, 32, 3), np.uint8)
    red, blue = COLOURS["red"], COLOURS["blue"]
    expected = {"halves": {(1, 1): red, (1, 14): red, (14, 1): blue},
                "sides": {(1, 1): red, (14, 1): red, (1, 14): blue},
                "ring": {(3, 3): red, (4, 4): blue, (11, 11): blue, (12, 12): red, (4, 12): red},
                "checks": {(1, 1): red, (14, 14): red, (1, 14): blue, (14, 1): blue}}
    for pattern, points in expected.items():
        ts.draw_subject(frame, ts.Subject(pattern, "red", "blue"), 2, 4, 16)
        for (dy, dx), rgb in points.items():
            assert tuple(frame[4 + dy, 2 + dx]) == rgb, (pattern, dy, dx)
    with pytest.raises(ValueError, match="even"):
        ts.draw_subject(frame, ts.ALL_SUBJECTS[0], 1, 2, 16)


@pytest.mark.parametrize("blur", [False, True], ids=["clean", "blurred"])
def test_identify_every_subject(blur):
    rng = np.random.default_rng(0)
    wrong = []
    for subject in ts.ALL_SUBJECTS:
        for where in _placements(rng, 3):
            image = ts.render_reference(subject, where, 64, 64)
            image = _blurred(image, rng) if blur else image
            if ts.identify(image) != subject:
                wrong.append((subject.name, where))
    assert not wrong


def test_identify_a_moving_clip_and_an_empty_one():
    rng = np.random.default_rng(1)
    subject = ts.Subject.parse("ring-yellow-blue")
    clip = ts.plan_subject_clip(rng, "up", 64, 64, 9)
    assert ts.identify(_blurred(ts.render_subject(clip, subject, 64, 64, 9), rng)) == subject
    assert ts.identify(np.full((3, 32, 32, 3), BACKGROUND, np.uint8)) is None
    assert ts.placement(np.full((1, 32, 32, 3), BACKGROUND, np.uint8)) is None


@pytest.mark.parametrize("blur", [False, True], ids=["clean", "blurred"])
def test_placement_reads_centre_and_size(blur):
    rng = np.random.default_rng(2)
    for subject in ts.ALL_SUBJECTS[::5]:
        for x, y, size in _placements(rng, 2):
            image = ts.render_reference(subject, (x, y, size), 64, 64)
            cx, cy, got = ts.placement(_blurred(image, rng) if blur else image)
            assert (cx, cy) == pytest.approx((x + (size - 1) / 2, y + (size - 1) / 2), abs=1.0 if blur else 1e-6)
            assert got == pytest.approx(size, abs=1.5 if blur else 0)


def test_cross_references_are_not_copies_and_paired_ones_are():
    rng = np.random.default_rng(3)
    subjects = ts.ALL_SUBJECTS[::3]
    for subject, direction in zip(subjects, list(DIRECTIONS) * len(subjects)):
        clip = ts.plan_subject_clip(rng, direction, 64, 64, 17)
        video = _blurred(ts.render_subject(clip, subject, 64, 64, 17), rng)
        x, y, size = ts.reference_placement(rng, 64, 64, avoid=(clip.x0, clip.y0, clip.size))
        assert abs(size - clip.size) >= 6 and 16 <= size <= 32
        assert np.hypot(x + size / 2 - clip.x0 - clip.size / 2, y + size / 2 - clip.y0 - clip.size / 2) >= 16
        cross = ts.render_reference(subject, (x, y, size), 64, 64)
        assert not ts.copies(video, cross)
        assert ts.copies(video, ts.render_subject(clip, subject, 64, 64, 17)[:1])


def test_captions_say_what_happens_not_what_it_looks_like():
    assert ts.subject_caption("left", 8) == "the object moving left, 8 fps"
    with pytest.raises(ValueError):
        ts.subject_caption("sideways", 8)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("subjects")
    counts = ts.write_subject_dataset(folder, num_frames=9, videos_per_subject=1, images_per_subject=1)
    return folder, counts


def test_writer_keeps_unseen_subjects_out_of_training(dataset):
    folder, counts = dataset
    tables = {name: pd.read_csv(folder / name, dtype=str, keep_default_na=False) for name in counts}
    assert {name: len(t) for name, t in tables.items()} == counts
    assert counts == {"train_paired.csv": 40 * 4 + 40, "train_cross.csv": 40 * 4 + 40, "heldout.csv": 8 * 4}
    unseen = set(ts.DEFAULT_UNSEEN)
    for name in ("train_paired.csv", "train_cross.csv"):
        assert not unseen & set(tables[name]["subject"])
        assert list(tables[name].columns) == list(ts.CSV_COLUMNS)
    assert set(tables["heldout.csv"]["subject"]) == unseen
    assert set(tables["heldout.csv"]["pairing"]) == {"cross"} and set(tables["train_cross.csv"]["pairing"]) == {"cross"}
    assert set(tables["heldout.csv"]["direction"]) == set(DIRECTIONS)
    for table in tables.values():
        for path in list(table["video"]) + list(table["reference_image"]):
            assert (folder / path).is_file(), path
    stills = tables["train_paired.csv"].query("fps == ''")
    assert (stills["video"] == stills["reference_image"]).all()
    assert set(stills["caption"]) == {ts.STILL_CAPTION} and set(stills["direction"]) == {""}
    assert json.loads((folder / "subjects.json").read_text())["unseen"] == list(ts.DEFAULT_UNSEEN)


def test_written_files_show_their_subject_and_pairing(dataset):
    folder, _ = dataset
    paired = pd.read_csv(folder / "train_paired.csv", dtype=str, keep_default_na=False)
    cross = pd.read_csv(folder / "train_cross.csv", dtype=str, keep_default_na=False)
    heldout = pd.read_csv(folder / "heldout.csv", dtype=str, keep_default_na=False)
    for row in pd.concat([paired.iloc[::37], heldout.iloc[::7]]).itertuples():
        video = read_frames(str(folder / row.video), np.arange(int(row.frames)))
        reference = read_frames(str(folder / row.reference_image), np.arange(1))
        assert ts.identify(video) == ts.identify(reference) == ts.Subject.parse(row.subject)
    for row in cross.iloc[::37].itertuples():
        video = read_frames(str(folder / row.video), np.arange(int(row.frames)))
        assert not ts.copies(video, read_frames(str(folder / row.reference_image), np.arange(1)))


def test_writer_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "something").write_text("")
    with pytest.raises(FileExistsError, match=str(tmp_path)):
        ts.write_subject_dataset(tmp_path)
