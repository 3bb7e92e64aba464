"""Subjects for personalization in the toy world: squares with a pattern and a palette of their own, which a prompt
cannot name ("the object moving left, 8 fps"), so a video can show the right one only by looking at its reference
image. Also the pixel classifiers that judge such a video (which subject is it; did it copy the reference's
placement instead of following the prompt) and the dataset writer.

A subject is a pattern (PATTERNS) in an ordered pair of distinct toy-world colours: 4 patterns x 12 palettes = 48.
Sizes, positions and pattern boundaries are even so they line up with the 2x2 colour blocks of mp4 (4:2:0) files.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from itertools import permutations
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import pandas as pd

from mg.data.toy_world import BACKGROUND, COLOURS, DEFAULT_JITTER, DIRECTIONS, ToyClip, default_speed, plan_clip
from mg.models.tae.media import write_video

PATTERNS = ("halves", "sides", "ring", "checks")


@dataclass(frozen=True)
class Subject:
    """A square drawn in `pattern` with colours `first` and `second` (see pattern_map for which goes where)."""
    pattern: str
    first: str
    second: str

    def __post_init__(self):
        if self.pattern not in PATTERNS or self.first not in COLOURS or self.second not in COLOURS \
                or self.first == self.second:
            raise ValueError(f"no subject {self.pattern!r} {self.first!r} {self.second!r}: patterns {list(PATTERNS)}, "
                             f"two different colours of {list(COLOURS)}")

    @property
    def name(self) -> str:
        return f"{self.pattern}-{self.first}-{self.second}"

    @classmethod
    def parse(cls, name: str) -> Subject:
        """"checks-red-blue" -> Subject("checks", "red", "blue"), validated."""
        parts = name.split("-")
        if len(parts) != 3:
            raise ValueError(f"subject name {name!r} must be 'pattern-first-second', e.g. 'checks-red-blue'")
        return cls(*parts)


ALL_SUBJECTS = tuple(Subject(p, a, b) for p in PATTERNS for a, b in permutations(COLOURS, 2))
# Held out of training: each pattern twice, each colour twice in each palette slot, eight different palettes (all but
# red-green, green-red, blue-yellow, yellow-blue), so training still shows every pattern and every colour in each slot.
DEFAULT_UNSEEN = ("halves-red-blue", "halves-green-yellow", "sides-blue-red", "sides-yellow-green",
                  "ring-red-yellow", "ring-blue-green", "checks-green-blue", "checks-yellow-red")


# ---- rendering ---------------------------------------------------------------------------------------------------
def _even(value: float) -> int:
    """The even integer nearest to `value` (ties up): pattern edges on even pixels match mp4's 2x2 colour blocks."""
    return 2 * int(np.floor(value / 2 + 0.5))


def pattern_map(pattern: str, height: int, width: int) -> np.ndarray:
    """bool (height, width): where a `pattern` subject filling that box shows its second colour.

    Boundaries fall on even pixels (rounded from the ideal halves and quarters), so a renderer and a classifier
    that both use this map agree to the pixel."""
    yy, xx = np.mgrid[0:height, 0:width]
    if pattern == "halves":
        return yy >= _even(height / 2)
    if pattern == "sides":
        return xx >= _even(width / 2)
    if pattern == "ring":
        top, left = _even(height / 4), _even(width / 4)
        return (yy >= top) & (yy < height - top) & (xx >= left) & (xx < width - left)
    if pattern == "checks":
        return (yy >= _even(height / 2)) != (xx >= _even(width / 2))
    raise ValueError(f"unknown pattern {pattern!r}; choose one of {list(PATTERNS)}")


def draw_subject(frame: np.ndarray, subject: Subject, x: int, y: int, size: int) -> None:
    """Paint `subject` as a size x size square with its top-left corner at (x, y) into uint8 (H, W, 3) `frame`."""
    if size % 2 or x % 2 or y % 2:
        raise ValueError(f"subject size and position must be even (mp4 4:2:0 blocks), got x={x} y={y} size={size}")
    second = pattern_map(subject.pattern, size, size)[..., None]
    frame[y:y + size, x:x + size] = np.where(second, COLOURS[subject.second], COLOURS[subject.first])


def render_subject(clip: ToyClip, subject: Subject, height: int, width: int, num_frames: int) -> np.ndarray:
    """uint8 (T, H, W, 3) frames of `subject` moving along `clip`'s path (its colour and shape are ignored)."""
    dx, dy = DIRECTIONS[clip.direction] if clip.direction is not None else (0, 0)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    frames[:] = BACKGROUND
    for i in range(num_frames):
        draw_subject(frames[i], subject, clip.x0 + dx * clip.speed * i, clip.y0 + dy * clip.speed * i, clip.size)
    return frames


def plan_subject_clip(rng, direction: Optional[str], height: int, width: int, num_frames: int) -> ToyClip:
    """A toy clip whose size varies from 16 to 28 px (plan_clip adds +-2 to an 18..26 base) so that scale is
    something a model can copy from a reference. Videos start near the centred path as in the toy world
    (DEFAULT_JITTER) and move an even number of pixels per frame (so every frame keeps even edges); a still image
    (direction None) lies anywhere. The clip's colour and shape are placeholders (render_subject ignores them)."""
    base = int(18 + 2 * rng.integers(0, 5))
    if direction is None:
        return plan_clip(rng, "red", "square", None, height, width, num_frames, size=base)
    speed = max(2, _even(default_speed(width, height, base, num_frames)))
    return plan_clip(rng, "red", "square", direction, height, width, num_frames, size=base, speed=speed,
                     jitter=DEFAULT_JITTER)


REFERENCE_SIZES = tuple(range(16, 33, 2))
MIN_CROSS_DISTANCE = 16.0  # px between the centres of a cross-paired reference and the clip's first frame
MIN_CROSS_SIZE_CHANGE = 6  # px between their sizes


@lru_cache(maxsize=None)
def _placements(height: int, width: int) -> np.ndarray:
    """(N, 3) every even (x, y, size) of a reference inside the frame (cached: the writer asks for each reference)."""
    return np.array([(x, y, s) for s in REFERENCE_SIZES
                     for y in range(0, height - s + 1, 2) for x in range(0, width - s + 1, 2)]).reshape(-1, 3)


def reference_placement(rng, height: int, width: int, avoid=None) -> tuple:
    """(x, y, size) of a still reference: even size in REFERENCE_SIZES, even position anywhere inside the frame.

    avoid: (x, y, size) of a clip's first frame; the reference then lies MIN_CROSS_DISTANCE px or more from it
    (centres) and differs in size by MIN_CROSS_SIZE_CHANGE px or more, so a model that copies the reference into
    the first frame instead of following the prompt is caught (see `copies`). Drawn uniformly over the placements
    that qualify."""
    options = _placements(height, width)
    if avoid is not None:
        ax, ay, asize = avoid
        x, y, s = options.T
        far = np.hypot(x + s / 2 - ax - asize / 2, y + s / 2 - ay - asize / 2) >= MIN_CROSS_DISTANCE
        options = options[far & (np.abs(s - asize) >= MIN_CROSS_SIZE_CHANGE)]
    if not len(options):
        raise ValueError(f"no reference placement fits a {width}x{height} frame (avoiding {avoid})")
    return tuple(int(v) for v in options[rng.integers(0, len(options))])


def render_reference(subject: Subject, placement, height: int, width: int) -> np.ndarray:
    """uint8 (1, H, W, 3): `subject` at placement (x, y, size) over the toy background."""
    frame = np.empty((height, width, 3), np.uint8)
    frame[:] = BACKGROUND
    draw_subject(frame, subject, *placement)
    return frame[None]


# ---- pixel classifiers -------------------------------------------------------------------------------------------
_MIN_FOREGROUND_DISTANCE = 40.0
# Blur mixes a subject's two colours at their boundary, and blue and yellow mix to nearly the grey background, so
# a blurred subject splits into parts along its pattern (toy_world.shape_masks would keep one part). Closing with a
# 5x5 square rejoins gaps of up to 4 px; sigma 1.5 px blur opens about 2.
_CLOSING = np.ones((5, 5), np.uint8)
_PAD = 2
# Templates are compared blurred by this much (px): a blurred subject then matches its own template best by a wider
# margin (measured on renders blurred by sigma 1.5 to 3 px), and a sharp one still does.
_TEMPLATE_BLUR = 1.2


def object_masks(frames: np.ndarray) -> np.ndarray:
    """bool (T, H, W): per frame, the largest connected region farther from the background (the frame's median
    colour) than half the frame's contrast, after closing the gaps blur opens inside a subject (see _CLOSING)."""
    frames = np.asarray(frames, np.float32)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames (T, H, W, 3), got shape {frames.shape}")
    background = np.median(frames.reshape(len(frames), -1, 3), axis=1)[:, None, None, :]
    distance = np.linalg.norm(frames - background, axis=-1)
    contrast = np.percentile(distance.reshape(len(distance), -1), 99.5, axis=1)[:, None, None]
    raw = (distance > np.maximum(0.5 * contrast, _MIN_FOREGROUND_DISTANCE)).astype(np.uint8)
    masks = np.zeros(raw.shape, bool)
    for i, mask in enumerate(raw):
        # Pad first: OpenCV's erosion counts pixels outside the frame as foreground, so closing would fill the
        # gap between a subject and a nearby frame edge.
        closed = cv2.morphologyEx(np.pad(mask, _PAD), cv2.MORPH_CLOSE, _CLOSING)[_PAD:-_PAD, _PAD:-_PAD].copy()
        count, labels, stats, _ = cv2.connectedComponentsWithStats(closed, connectivity=8)
        if count > 1:
            masks[i] = labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return masks


def _box(mask):
    ys, xs = np.nonzero(mask)
    return ys.min(), ys.max() + 1, xs.min(), xs.max() + 1


def _subject_distances(frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(len(ALL_SUBJECTS),) mean RGB distance between the pixels inside `mask` and each subject's template drawn
    over the mask's bounding box, its pattern blurred by _TEMPLATE_BLUR."""
    top, bottom, left, right = _box(mask)
    inside = mask[top:bottom, left:right]
    pixels = frame[top:bottom, left:right][inside].astype(np.float32)
    # Blur is linear: a blurred template is first + blurred map * (second - first).
    second = {p: cv2.GaussianBlur(pattern_map(p, bottom - top, right - left).astype(np.float32), (0, 0),
                                  _TEMPLATE_BLUR, borderType=cv2.BORDER_REPLICATE)[inside][:, None] for p in PATTERNS}
    rgb = {c: np.asarray(v, np.float32) for c, v in COLOURS.items()}
    return np.array([np.linalg.norm(pixels - rgb[s.first] - second[s.pattern] * (rgb[s.second] - rgb[s.first]),
                                    axis=-1).mean() for s in ALL_SUBJECTS])


def identify(frames: np.ndarray) -> Optional[Subject]:
    """The subject whose template best matches the object in uint8 (T, H, W, 3) frames: the least median over the
    frames of the mean template distance (so a few bad frames do not decide); None when no frame shows an object."""
    frames = np.asarray(frames)
    masks = object_masks(frames)
    scores = [_subject_distances(f, m) for f, m in zip(frames, masks) if m.any()]
    if not scores:
        return None
    return ALL_SUBJECTS[int(np.argmin(np.median(scores, axis=0)))]


def placement(frames: np.ndarray) -> Optional[tuple]:
    """(cx, cy, size) of the object in the first frame: its centroid (pixel-centre coordinates, so a square drawn
    at x, y, size has cx = x + (size - 1) / 2) and the mean side of its bounding box; None if there is none."""
    mask = object_masks(np.asarray(frames)[:1])[0]
    if not mask.any():
        return None
    ys, xs = np.nonzero(mask)
    top, bottom, left, right = _box(mask)
    return float(xs.mean()), float(ys.mean()), 0.5 * float(bottom - top + right - left)


def copies(generated: np.ndarray, reference: np.ndarray, position_tolerance: float = 4.0,
           size_tolerance: float = 3.0) -> bool:
    """Whether the generated video's first frame puts the object where the reference image has it, at its size
    (within the tolerances, px): the sign of a model pasting the reference in rather than following the prompt.
    False when either shows no object."""
    ours, theirs = placement(generated), placement(reference)
    if ours is None or theirs is None:
        return False
    return bool(np.hypot(ours[0] - theirs[0], ours[1] - theirs[1]) <= position_tolerance
                and abs(ours[2] - theirs[2]) <= size_tolerance)


# ---- dataset -----------------------------------------------------------------------------------------------------
CSV_COLUMNS = ("video", "caption", "fps", "frames", "height", "width", "reference_image", "subject", "direction",
               "pairing")
STILL_CAPTION = "the object, still image"


def subject_caption(direction: str, fps) -> str:
    """"the object moving left, 8 fps": what happens, never what the object looks like."""
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; choose one of {list(DIRECTIONS)}")
    return f"the object moving {direction}, {fps:g} fps"


def check_unseen(unseen) -> tuple:
    """The unseen subjects (names or Subjects) as Subjects; ValueError unless training keeps every pattern and every
    colour in each palette slot (else a held-out subject would ask for something never seen, not a new combination)."""
    held = tuple(Subject.parse(u) if isinstance(u, str) else u for u in unseen)
    seen = [s for s in ALL_SUBJECTS if s not in held]
    missing = ([p for p in PATTERNS if p not in {s.pattern for s in seen}]
               + [f"first {c}" for c in COLOURS if c not in {s.first for s in seen}]
               + [f"second {c}" for c in COLOURS if c not in {s.second for s in seen}])
    if missing:
        raise ValueError(f"holding out {[s.name for s in held]} leaves training without {missing}")
    return held


def _write(folder: Path, name: str, frames: np.ndarray, fps=1) -> str:
    """Write `frames` to folder/name (mp4, or png for one frame) and return `name`, the path a CSV row holds."""
    write_video(folder / name, frames, fps)
    return name


def write_subject_dataset(output_folder, seed=0, height=64, width=64, num_frames=17, fps=8, videos_per_subject=4,
                          images_per_subject=2, unseen=DEFAULT_UNSEEN) -> dict:
    """Write the toy subject dataset into a new (or empty) folder and return {csv name: number of rows}.

    videos/<subject>_<direction>_<k>.mp4 for every subject, direction and k < videos_per_subject, and
    images/<subject>_<k>.png stills; references/*.png. train_paired.csv: the seen subjects' videos, each with a frame
    of its own clip as reference, and stills, each its own reference. train_cross.csv: the same rows with cross-paired
    references (the subject at a reference_placement avoiding the first frame). heldout.csv: the unseen subjects'
    videos with cross-paired references. Columns: CSV_COLUMNS. subjects.json records the parameters. Everything of
    video k of subject i in direction d comes from default_rng([seed, i, d, k]) (stills: d = 4) in the same order
    whether or not the subject is unseen, so the files do not depend on `unseen`.
    """
    out = Path(output_folder)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; choose a new output folder")
    if min(videos_per_subject, images_per_subject) < 0 or num_frames < 2:
        raise ValueError("videos_per_subject and images_per_subject must be >= 0 and num_frames >= 2")
    held = check_unseen(unseen)
    rows = {"train_paired": [], "train_cross": [], "heldout": []}
    for i, subject in enumerate(ALL_SUBJECTS):
        for d, direction in enumerate(DIRECTIONS):
            for k in range(videos_per_subject):
                rng = np.random.default_rng([seed, i, d, k])
                clip = plan_subject_clip(rng, direction, height, width, num_frames)
                paired_frame = int(rng.integers(0, num_frames))
                cross = reference_placement(rng, height, width, avoid=(clip.x0, clip.y0, clip.size))
                stem = f"{subject.name}_{direction}_{k:03d}"
                frames = render_subject(clip, subject, height, width, num_frames)
                video = _write(out, f"videos/{stem}.mp4", frames, fps)
                row = (video, subject_caption(direction, fps), fps, num_frames, height, width)
                cross_png = _write(out, f"references/{stem}_cross.png",
                                       render_reference(subject, cross, height, width))
                if subject in held:
                    rows["heldout"].append(row + (cross_png, subject.name, direction, "cross"))
                    continue
                paired_png = _write(out, f"references/{stem}_paired.png", frames[paired_frame:paired_frame + 1])
                rows["train_paired"].append(row + (paired_png, subject.name, direction, "paired"))
                rows["train_cross"].append(row + (cross_png, subject.name, direction, "cross"))
        if subject in held:
            continue
        for k in range(images_per_subject):
            rng = np.random.default_rng([seed, i, len(DIRECTIONS), k])
            clip = plan_subject_clip(rng, None, height, width, 1)
            cross = reference_placement(rng, height, width, avoid=(clip.x0, clip.y0, clip.size))
            image = _write(out, f"images/{subject.name}_{k:03d}.png",
                               render_subject(clip, subject, height, width, 1))
            cross_png = _write(out, f"references/{subject.name}_{k:03d}_cross.png",
                                   render_reference(subject, cross, height, width))
            row = (image, STILL_CAPTION, "", 1, height, width)
            rows["train_paired"].append(row + (image, subject.name, "", "paired"))
            rows["train_cross"].append(row + (cross_png, subject.name, "", "cross"))
    for split, records in rows.items():
        pd.DataFrame(records, columns=CSV_COLUMNS).to_csv(out / f"{split}.csv", index=False)
    params = dict(seed=seed, height=height, width=width, num_frames=num_frames, fps=fps,
                  videos_per_subject=videos_per_subject, images_per_subject=images_per_subject,
                  unseen=[s.name for s in held], patterns=PATTERNS, colours=COLOURS, background=BACKGROUND)
    (out / "subjects.json").write_text(json.dumps(params, indent=2))
    return {f"{split}.csv": len(records) for split, records in rows.items()}
