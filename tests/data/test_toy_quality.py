"""The toy world's quality measures: edge sharpness, background spread, colour drift and the corner classifier, on
clean renders first and on what blurring, rounding, noise and a drifting colour do to them."""
import cv2
import numpy as np
import pytest

from mg.data import toy_world as tw
from mg.data.toy_quality import (background_spread, classify_shape_by_corners, colour_drift, edge_sharpness,
                                 measure_quality, outline_harmonics)


def clean_clip(colour="red", shape="square", direction="left", seed=0, size=24):
    clip = tw.plan_clip(np.random.default_rng(seed), colour, shape, direction, 64, 64, 17, size=size, jitter=6)
    return tw.render(clip, 64, 64, 17)


def blurred(frames, sigma):
    return np.stack([cv2.GaussianBlur(f, (0, 0), sigma) for f in frames])


def superellipse(power, size=24, canvas=64):
    """One frame: a red superellipse |x|^p + |y|^p <= 1 (p = 2 a circle, p -> infinity a square) on the grey."""
    frame = np.full((1, canvas, canvas, 3), tw.BACKGROUND, np.uint8)
    r = np.linspace(-1, 1, size)
    inside = np.abs(r[:, None]) ** power + np.abs(r[None, :]) ** power <= 1
    start = (canvas - size) // 2
    frame[0, start:start + size, start:start + size][inside] = tw.COLOURS["red"]
    return frame


def test_the_corner_classifier_reads_every_clean_render():
    wrong = []
    for seed, (colour, shape, direction) in enumerate(tw.all_combos()):
        for size in (20, 24, 28):
            frames = clean_clip(colour, shape, direction, seed, size)
            if classify_shape_by_corners(frames) != shape:
                wrong.append((colour, shape, direction, size))
    assert not wrong


def lumpy_square(seed, size=24, canvas=64, depth=3):
    """One frame: a red square with three 4-6 px long, `depth` px deep bites out of each side (as generated squares
    have), which keeps its corners but takes a fifth of its fill."""
    rng = np.random.default_rng(seed)
    frame = np.full((1, canvas, canvas, 3), tw.BACKGROUND, np.uint8)
    low, high = (canvas - size) // 2, (canvas + size) // 2
    frame[0, low:high, low:high] = tw.COLOURS["red"]
    sides = [lambda a: (slice(low, low + depth), a), lambda a: (slice(high - depth, high), a),
             lambda a: (a, slice(low, low + depth)), lambda a: (a, slice(high - depth, high))]
    for side in sides:
        for start in rng.choice(np.arange(3, size - 9), 3, replace=False):
            frame[0][side(slice(low + start, low + start + int(rng.integers(4, 7))))] = tw.BACKGROUND
    return frame


def test_a_square_is_a_square_by_its_corners_not_its_fill():
    for seed in range(4):
        lumpy = lumpy_square(seed)
        assert tw.classify_shape(lumpy) == "circle"  # the fill-ratio judge
        assert classify_shape_by_corners(lumpy) == "square"
    assert classify_shape_by_corners(superellipse(4)) == "square"  # rounded corners, still four
    assert classify_shape_by_corners(superellipse(2.3)) == "circle"
    assert classify_shape_by_corners(superellipse(2)) == "circle"
    third, fourth = outline_harmonics(tw.shape_masks(superellipse(2))[0])
    assert third < 0.02 and fourth < 0.02


def test_edge_sharpness_is_one_over_the_edge_width_whatever_the_colour():
    crisp = [edge_sharpness(clean_clip(colour)) for colour in tw.COLOURS]
    assert min(crisp) > 0.9 and max(crisp) / min(crisp) < 1.1  # in units of the contrast
    widths = [edge_sharpness(blurred(clean_clip(), sigma)) for sigma in (0.8, 1.6, 3.2)]
    assert widths[0] > widths[1] > widths[2]
    # a Gaussian edge of std sigma has sum of squared steps ~ 1 / (2 sqrt(pi) sigma)
    assert widths[2] == pytest.approx(1 / (2 * np.sqrt(np.pi) * 3.2), rel=0.3)


def test_background_spread_measures_the_backgrounds_noise_not_the_shape():
    frames = clean_clip()
    assert background_spread(frames) == 0.0
    noisy = frames.astype(np.float64) + np.random.default_rng(0).normal(0, 6, frames.shape)
    assert background_spread(np.clip(noisy, 0, 255).astype(np.uint8)) == pytest.approx(6, rel=0.1)


def test_colour_drift_is_zero_for_a_steady_colour_and_follows_a_drifting_one():
    frames = clean_clip()
    assert colour_drift(frames) == 0.0
    drifting = frames.copy()
    masks = tw.shape_masks(frames)
    shifts = np.linspace(-20, 20, len(frames))
    for frame, mask, shift in zip(drifting, masks, shifts):
        frame[mask] = np.clip(frame[mask].astype(int) + [0, int(shift), 0], 0, 255)
    assert colour_drift(drifting) == pytest.approx(np.std(np.round(shifts)), rel=0.05)


def test_measure_quality_on_an_empty_video():
    empty = np.full((3, 64, 64, 3), 128, np.uint8)
    measures = measure_quality(empty)
    assert np.isnan(measures["edge_sharpness"]) and np.isnan(measures["colour_drift"])
    assert measures["corner_shape"] is None and measures["background_spread"] == 0.0
