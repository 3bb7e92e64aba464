"""A toy pool of mixed visual quality for curation to sort (mg.data.curation, tools/curate_videos.py).

Movie Gen's last stage fine-tunes on a small hand-picked set of very high quality videos. The toy world renders every
clip perfectly, so curation has nothing to separate there; this pool mixes clean clips with three known flaws
(blurred, off-centre, partly out of frame) and names each clip's kind in a `quality` column, so a curation rule can
be checked against what it should keep. Clean clips are drawn like the toy dataset's (tools/make_toy_dataset.py with
scripts/train_toy.sh's 24 px shapes), and only the training combinations appear: the held-out ones stay unseen.
"""
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np
import pandas as pd

from mg.data.toy_world import (CSV_COLUMNS, DEFAULT_HOLDOUT, DEFAULT_JITTER, DIRECTIONS, all_combos, caption,
                               default_speed, parse_combo, plan_clip, render)
from mg.io import atomic_path
from mg.models.tae.media import write_video

QUALITY_KINDS = ("clean", "blurred", "off_centre", "cut")
POOL_CSV = "pool.csv"
POOL_COLUMNS = CSV_COLUMNS + ("quality",)
BLUR_SIGMA = (1.5, 2.5)    # pixels, drawn per clip: edges ~4-6 px wide instead of one
# The middle of an off-centre clip's path lies at least this far from the frame's centre; a clean clip's lies
# within position_jitter px per axis (8.5 px at most with the default 6).
OFF_CENTRE_PX = 16
_MARGIN = 2                # pixels an off-centre shape keeps from the border, so it is off-centre but not cut
_TRIES = 100               # draws of an off-centre start before giving up (about one in five is far enough)
_STREAM = 30_000           # seeds the pool's draws apart from the toy dataset's (default_rng([seed, i, k]))


def render_pool_clip(rng, kind, colour, shape, direction, height=64, width=64, num_frames=17, shape_size=24,
                     position_jitter: Optional[int] = DEFAULT_JITTER):
    """uint8 (T, H, W, 3) frames of one moving clip of `kind` (one of QUALITY_KINDS), drawn from `rng`."""
    if kind not in QUALITY_KINDS:
        raise ValueError(f"unknown quality kind {kind!r}; choose one of {list(QUALITY_KINDS)}")
    if kind == "off_centre":
        clip = _off_centre_clip(rng, colour, shape, direction, height, width, num_frames, shape_size)
        return render(clip, height, width, num_frames)
    clip = plan_clip(rng, colour, shape, direction, height, width, num_frames, size=shape_size, jitter=position_jitter)
    if kind == "cut":
        return _render_cut(rng, clip, height, width, num_frames)
    frames = render(clip, height, width, num_frames)
    return _blur(rng, frames) if kind == "blurred" else frames


def _blur(rng, frames):
    """Every frame through one Gaussian blur, its sigma drawn from BLUR_SIGMA (an out-of-focus or upscaled clip)."""
    sigma = float(rng.uniform(*BLUR_SIGMA))
    return np.stack([cv2.GaussianBlur(frame, (0, 0), sigma) for frame in frames])


def _path_offset(clip, height, width, num_frames):
    """Pixels from the frame's centre to the middle of the shape's path."""
    dx, dy = DIRECTIONS[clip.direction]
    half_travel = clip.speed * (num_frames - 1) / 2
    return float(np.hypot(clip.x0 + dx * half_travel + clip.size / 2 - width / 2,
                          clip.y0 + dy * half_travel + clip.size / 2 - height / 2))


def _off_centre_clip(rng, colour, shape, direction, height, width, num_frames, shape_size):
    """A clip that starts anywhere its path fits _MARGIN px inside the frame (position jitter None), drawn again until
    the middle of its path lies OFF_CENTRE_PX or more from the frame's centre."""
    speed = default_speed(width, height, shape_size, num_frames)  # the clean clips' speed, not the smaller frame's
    for _ in range(_TRIES):
        clip = plan_clip(rng, colour, shape, direction, height - 2 * _MARGIN, width - 2 * _MARGIN, num_frames,
                         size=shape_size, speed=speed, jitter=None)
        clip = replace(clip, x0=clip.x0 + _MARGIN, y0=clip.y0 + _MARGIN)
        if _path_offset(clip, height, width, num_frames) >= OFF_CENTRE_PX:
            return clip
    raise ValueError(f"no path of a {shape_size}px {shape} moving {direction} lies {OFF_CENTRE_PX}px from the centre "
                     f"of a {width}x{height} frame; use a larger frame or a smaller shape")


def _render_cut(rng, clip, height, width, num_frames):
    """The clip moved along its motion until its path runs over one edge of the frame by a quarter to three quarters
    of the shape (so it enters or leaves the frame): drawn on a canvas padded by the shape's size, then cropped."""
    dx, dy = DIRECTIONS[clip.direction]
    axis = 0 if dx else 1
    start = (clip.x0, clip.y0)[axis]
    end = start + (dx or dy) * clip.speed * (num_frames - 1)
    low, high = min(start, end), max(start, end) + clip.size
    over = 2 * int(rng.integers(clip.size // 8, 3 * clip.size // 8 + 1))
    shift = (width, height)[axis] + over - high if rng.integers(2) else -over - low
    pad = clip.size
    moved = replace(clip, x0=clip.x0 + pad + (shift if axis == 0 else 0), y0=clip.y0 + pad + (shift if axis else 0))
    return render(moved, height + 2 * pad, width + 2 * pad, num_frames)[:, pad:pad + height, pad:pad + width]


def write_toy_pool(output_folder: str, seed: int = 0, per_combo: int = 8, height: int = 64, width: int = 64,
                   num_frames: int = 17, fps: int = 8, shape_size: int = 24,
                   position_jitter: Optional[int] = DEFAULT_JITTER, holdout: Sequence[str] = DEFAULT_HOLDOUT):
    """Write a pool of toy clips of mixed quality into a new (or empty) folder; returns {quality kind: clips}.

    videos/<colour>_<shape>_<direction>_<k>.mp4 for every training combination and pool.csv listing them in the toy
    dataset's form (its CSV columns, captions with the fps) plus `quality`, one of QUALITY_KINDS drawn at random per
    clip: clean (as the toy dataset draws them), blurred (a Gaussian blur of BLUR_SIGMA px on every frame), off_centre
    (starts anywhere its path fits, its path's middle OFF_CENTRE_PX or more from the centre) or cut (its path runs over
    the frame's edge, so some frames show only part of the shape). Clip k of combination i is drawn from
    default_rng([seed, 30000, i, k]).

    Args:
        output_folder: new or empty folder to write into.
        seed: random seed of the kinds, positions, sizes and blurs.
        per_combo: clips per training (colour, shape, direction).
        height: frame height in pixels.
        width: frame width in pixels.
        num_frames: frames per clip.
        fps: frame rate written into the files, the CSV and the captions.
        shape_size: shape width in pixels (+-1/16 per clip), as the toy dataset of scripts/train_toy.sh.
        position_jitter: pixels a clean, blurred or cut shape's start may lie from the centred one (null: anywhere).
        holdout: "colour shape direction" combinations left out (the toy dataset's held-out ones).
    """
    out = Path(output_folder)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; choose a new output folder")
    if per_combo < 1:
        raise ValueError(f"per_combo must be >= 1, got {per_combo}")
    held = {parse_combo(h) if isinstance(h, str) else tuple(h) for h in holdout}
    rows = []
    for i, (colour, shape, direction) in enumerate(all_combos()):
        if (colour, shape, direction) in held:
            continue
        for k in range(per_combo):
            rng = np.random.default_rng([seed, _STREAM, i, k])
            kind = QUALITY_KINDS[int(rng.integers(len(QUALITY_KINDS)))]
            frames = render_pool_clip(rng, kind, colour, shape, direction, height, width, num_frames, shape_size,
                                      position_jitter)
            name = f"videos/{colour}_{shape}_{direction}_{k:03d}.mp4"
            with atomic_path(out / name) as path:
                write_video(path, frames, fps)
            rows.append((name, caption(colour, shape, direction, fps), fps, num_frames, height, width, colour, shape,
                         direction, kind))
    table = pd.DataFrame(rows, columns=POOL_COLUMNS)
    with atomic_path(out / POOL_CSV) as path:
        table.to_csv(path, index=False)
    return {kind: int((table["quality"] == kind).sum()) for kind in QUALITY_KINDS}
