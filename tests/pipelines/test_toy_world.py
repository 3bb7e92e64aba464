"""Toy world: rendering matches its plan, the pixel classifiers read ground-truth clips back (clean and through an
mp4 file), and the dataset writer is deterministic and keeps held-out combinations out of train.csv."""
import json

import numpy as np
import pandas as pd
import pytest

from mg.data import toy_world as tw
from mg.data.video_io import read_frames


def _clips(height, num_frames, per_combo=1, seed=0):
    rng = np.random.default_rng(seed)
    for colour, shape, direction in tw.all_combos():
        for _ in range(per_combo):
            yield tw.plan_clip(rng, colour, shape, direction, height, height, num_frames)


def test_render_places_the_shape_where_planned():
    clip = tw.ToyClip("blue", "square", "down", size=10, x0=6, y0=4, speed=3)
    frames = tw.render(clip, 48, 40, 5)
    for i in range(5):
        ys, xs = np.nonzero(np.any(frames[i] != tw.BACKGROUND, axis=-1))
        assert (ys.min(), ys.max(), xs.min(), xs.max()) == (4 + 3 * i, 13 + 3 * i, 6, 15)
        assert np.all(frames[i, ys, xs] == tw.COLOURS["blue"])


@pytest.mark.parametrize("shape, expected", [("square", 1.0), ("circle", np.pi / 4), ("triangle", 0.5)])
def test_fill_ratio_close_to_the_ideal_shape(shape, expected):
    frames = tw.render(tw.ToyClip("red", shape, None, size=30, x0=4, y0=4, speed=0), 48, 48, 1)
    assert tw.fill_ratio(tw.shape_masks(frames)[0]) == pytest.approx(expected, abs=0.04)


def test_classifiers_are_right_on_every_clean_clip():
    wrong = []
    for clip in _clips(64, 17, per_combo=2):
        truth = {"colour": clip.colour, "shape": clip.shape, "direction": clip.direction}
        got = tw.classify(tw.render(clip, 64, 64, 17))
        if got != truth:
            wrong.append((truth, got))
    assert not wrong


def test_classifiers_survive_mp4_compression(tmp_path):
    wrong = []
    for i, clip in enumerate(_clips(64, 17, seed=1)):
        path = tmp_path / f"{i}.mp4"
        tw.write_video(path, tw.render(clip, 64, 64, 17), 8)
        got = tw.classify(read_frames(str(path), np.arange(17)))
        if got != {"colour": clip.colour, "shape": clip.shape, "direction": clip.direction}:
            wrong.append((clip, got))
    assert not wrong


def test_still_image_and_empty_frames():
    clip = tw.plan_clip(np.random.default_rng(0), "yellow", "triangle", None, 64, 64, 1)
    assert tw.classify(tw.render(clip, 64, 64, 1)) == {"colour": "yellow", "shape": "triangle", "direction": None}
    blank = np.full((3, 16, 16, 3), 128, np.uint8)
    assert tw.classify(blank) == {"colour": None, "shape": None, "direction": None}
    # A shape that does not move is "none", not a direction.
    still = np.repeat(tw.render(clip, 64, 64, 1), 4, axis=0)
    assert tw.classify_direction(still) == "none"


def test_classifier_ignores_a_small_speck():
    clip = tw.ToyClip("green", "circle", "left", size=16, x0=40, y0=20, speed=2)
    frames = tw.render(clip, 64, 64, 9)
    frames[:, 2:4, 2:4] = tw.COLOURS["red"]
    assert tw.classify(frames) == {"colour": "green", "shape": "circle", "direction": "left"}


def test_jitter_keeps_starts_near_the_centred_path():
    def offsets(direction, jitter):
        """(x, y) distance of the path's midpoint from the frame centre, for many 64 x 64 clips of 17 frames."""
        rng = np.random.default_rng(0)
        out = []
        for _ in range(300):
            c = tw.plan_clip(rng, "red", "square", direction, 64, 64, 17, jitter=jitter)
            dx, dy = tw.DIRECTIONS[direction]
            end_x, end_y = c.x0 + dx * c.speed * 16, c.y0 + dy * c.speed * 16
            assert 0 <= min(c.x0, end_x) and max(c.x0, end_x) + c.size <= 64  # inside the frame all the way
            assert 0 <= min(c.y0, end_y) and max(c.y0, end_y) + c.size <= 64
            out.append((abs((c.x0 + end_x + c.size) / 2 - 32), abs((c.y0 + end_y + c.size) / 2 - 32)))
        return np.array(out)

    for direction in ("right", "up"):
        near = offsets(direction, 6)
        assert near.max() <= 6 + 1  # +1: starts are even pixels
        assert near.max() >= 4      # and they do vary
        anywhere = offsets(direction, None)
        assert anywhere.max() >= 20  # across the frame (free span 48 px across the motion)
        assert np.array_equal(offsets(direction, 100), anywhere)  # a jitter wider than the frame is no limit


def test_captions_and_bad_labels():
    assert tw.caption("red", "circle", "left", 8) == "a red circle moving left, 8 fps"
    assert tw.caption("red", "circle") == "a red circle, still image"
    with pytest.raises(ValueError, match="purple"):
        tw.caption("purple", "circle", "left", 8)
    with pytest.raises(ValueError, match="colour shape direction"):
        tw.parse_combo("red circle")
    with pytest.raises(ValueError, match="leaves a 16x16 frame"):
        tw.plan_clip(np.random.default_rng(0), "red", "circle", "left", 16, 16, 17, size=8, speed=2)


def test_dataset_is_deterministic_and_holds_out(tmp_path):
    kwargs = dict(seed=3, height=32, width=32, num_frames=9, fps=8, videos_per_combo=1, images_per_pair=1,
                  holdout=["red circle left", "blue/square/up"])
    counts = tw.write_toy_dataset(tmp_path / "a", **kwargs)
    tw.write_toy_dataset(tmp_path / "b", **kwargs)
    n_combos = len(tw.COLOURS) * len(tw.SHAPES) * len(tw.DIRECTIONS)
    assert counts == {"train.csv": n_combos - 2 + len(tw.COLOURS) * len(tw.SHAPES), "heldout.csv": 2}
    train, held = (pd.read_csv(tmp_path / "a" / f, keep_default_na=False) for f in ("train.csv", "heldout.csv"))
    assert list(train.columns) == list(tw.CSV_COLUMNS)
    combos = set(zip(train["colour"], train["shape"], train["direction"]))
    assert {("red", "circle", "left"), ("blue", "square", "up")}.isdisjoint(combos)
    assert set(zip(held["colour"], held["shape"], held["direction"])) == {("red", "circle", "left"),
                                                                           ("blue", "square", "up")}
    assert held.caption.tolist() == ["a red circle moving left, 8 fps", "a blue square moving up, 8 fps"]
    for name in train.video.tolist()[:3] + train.video.tolist()[-2:]:
        first = read_frames(str(tmp_path / "a" / name), np.arange(1))
        np.testing.assert_array_equal(first, read_frames(str(tmp_path / "b" / name), np.arange(1)))
    with pytest.raises(FileExistsError, match="not empty"):
        tw.write_toy_dataset(tmp_path / "a", **kwargs)


@pytest.mark.parametrize("shape_size, expected", [(None, 8), (12, 12)])
def test_dataset_shape_size(tmp_path, shape_size, expected):
    """Shapes are a quarter of the frame unless shape_size says otherwise (the PNG stills are lossless)."""
    tw.write_toy_dataset(tmp_path, height=32, width=32, num_frames=9, videos_per_combo=0, images_per_pair=2,
                         holdout=[], shape_size=shape_size)
    for k in range(2):
        still = read_frames(str(tmp_path / f"images/blue_square_{k:03d}.png"), np.arange(1))
        ys, xs = np.nonzero(tw.shape_masks(still)[0])
        assert (np.ptp(ys) + 1, np.ptp(xs) + 1) == (expected, expected)
    assert json.loads((tmp_path / "toy_world.json").read_text())["shape_size"] == shape_size
    with pytest.raises(ValueError, match="shape_size must be at least 2"):
        tw.write_toy_dataset(tmp_path / "bad", shape_size=0)  # 0 would otherwise fall back to the default
