"""The toy world: coloured shapes moving over a plain background, their captions, and pixel classifiers that read
colour, shape and motion direction back from a video (to measure whether generated videos follow their prompt).

Videos are uint8 RGB arrays (T, H, W, 3); an image is a one-frame video. Everything is deterministic given a NumPy
Generator. The classifiers assume what the renderer guarantees: one shape, covering well under half the frame, on a
uniform background.
"""
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import pandas as pd

from mg.models.tae.media import write_video

COLOURS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 80, 230), "yellow": (235, 215, 40)}
SHAPES = ("square", "circle", "triangle")
# Unit motion per direction in image coordinates (x to the right, y downwards).
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
BACKGROUND = (128, 128, 128)

# Shape features. Fill ratio of the bounding box: square 1, circle pi/4, triangle 1/2. Height of the centroid in
# the bounding box (0 top, 1 bottom): 1/2 for square and circle, 2/3 for the triangle (apex on top), a measure that
# blur hardly moves. Thresholds sit halfway between the shapes' values.
_SQUARE_FILL = 0.5 * (1.0 + np.pi / 4)
_TRIANGLE_CENTROID = 0.5 * (0.5 + 2.0 / 3.0)

# A pixel belongs to the shape when its RGB distance from the background exceeds half the frame's contrast (the
# edge of a blurred shape, so blur from compression or decoding does not grow or shrink it), and at least this much.
_MIN_FOREGROUND_DISTANCE = 40.0
_MIN_MOTION = 0.15           # pixels per frame of centroid motion below which a video counts as still


@dataclass(frozen=True)
class ToyClip:
    """What a toy video shows: the labels, and where the shape starts and how it moves (pixels, pixels/frame)."""
    colour: str
    shape: str
    direction: Optional[str]  # None for a still image
    size: int
    x0: int
    y0: int
    speed: int


def check_labels(colour, shape, direction=None):
    if colour not in COLOURS:
        raise ValueError(f"unknown colour {colour!r}; choose one of {list(COLOURS)}")
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; choose one of {list(SHAPES)}")
    if direction is not None and direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; choose one of {list(DIRECTIONS)}")


def caption(colour, shape, direction=None, fps=None):
    """The caption of a toy clip, e.g. "a red circle moving left, 8 fps" (or "a red circle, still image")."""
    check_labels(colour, shape, direction)
    if direction is None:
        return f"a {colour} {shape}, still image"
    return f"a {colour} {shape} moving {direction}, {fps:g} fps" if fps else f"a {colour} {shape} moving {direction}"


def default_speed(width, height, size, num_frames):
    """Pixels per frame so the shape travels about half of the free span of the shorter side over the clip."""
    free = min(width, height) - size
    return max(1, int(round(0.5 * free / max(num_frames - 1, 1))))


def _start(rng, low, free, jitter):
    """An even start coordinate in [low, low + free]: within `jitter` pixels of the middle, or anywhere (None)."""
    first, last = low, low + free
    if jitter is not None:
        middle, reach = low + 2 * (free // 4), 2 * (jitter // 2)
        first, last = max(first, middle - reach), min(last, middle + reach)
    return int(first + 2 * rng.integers(0, (last - first) // 2 + 1))


def plan_clip(rng, colour, shape, direction, height, width, num_frames, size=None, speed=None, jitter=None):
    """Draw a random start position (and size jitter) such that the shape stays inside the frame for the clip.

    jitter: how far (pixels) the start may lie from the one that centres the shape's path in the frame; None lets
    it start anywhere the path fits."""
    check_labels(colour, shape, direction)
    # Even sizes and start positions line the shape's edges up with the 2x2 colour blocks of mp4 (4:2:0) files.
    base = size or max(4, min(height, width) // 4)
    size = int(base + 2 * rng.integers(-(base // 16), base // 16 + 1))
    size += size % 2
    speed = 0 if direction is None else (speed or default_speed(width, height, size, num_frames))
    dx, dy = DIRECTIONS[direction] if direction is not None else (0, 0)
    travel_x, travel_y = abs(dx) * speed * (num_frames - 1), abs(dy) * speed * (num_frames - 1)
    if travel_x > width - size or travel_y > height - size:
        raise ValueError(f"a {size}px shape moving {speed}px/frame for {num_frames} frames leaves a "
                         f"{width}x{height} frame; use fewer frames, a lower speed or a smaller shape")
    x_lo = travel_x if dx < 0 else 0
    y_lo = travel_y if dy < 0 else 0
    x0 = _start(rng, x_lo, width - size - travel_x, jitter)
    y0 = _start(rng, y_lo, height - size - travel_y, jitter)
    return ToyClip(colour, shape, direction, size, x0, y0, speed)


def _draw(frame, shape, x, y, size, rgb):
    if shape == "square":
        frame[y:y + size, x:x + size] = rgb
    elif shape == "circle":
        r = (size - 1) / 2.0
        yy, xx = np.mgrid[0:size, 0:size]
        inside = (yy - r) ** 2 + (xx - r) ** 2 <= (r + 0.25) ** 2
        frame[y:y + size, x:x + size][inside] = rgb
    else:  # triangle: apex centred on top, base along the bottom row
        points = np.array([[x + (size - 1) / 2.0, y], [x, y + size - 1], [x + size - 1, y + size - 1]])
        cv2.fillPoly(frame, [np.round(points).astype(np.int32)], rgb)


def render(clip: ToyClip, height, width, num_frames, background=BACKGROUND):
    """uint8 (T, H, W, 3) RGB frames of `clip` (T = 1 for a still image) over a plain `background` (RGB)."""
    dx, dy = DIRECTIONS[clip.direction] if clip.direction is not None else (0, 0)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    frames[:] = background
    rgb = tuple(int(c) for c in COLOURS[clip.colour])
    for i in range(num_frames):
        _draw(frames[i], clip.shape, clip.x0 + dx * clip.speed * i, clip.y0 + dy * clip.speed * i, clip.size, rgb)
    return frames


# ---- pixel classifiers -------------------------------------------------------------------------------------------
def shape_masks(frames):
    """Per frame, the largest connected region that differs from the background (the median colour of the frame)
    by more than half the frame's contrast.

    Returns bool (T, H, W). Keeping only the largest component ignores specks that generated videos may contain.
    """
    frames = np.asarray(frames, np.float32)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames (T, H, W, 3), got shape {frames.shape}")
    background = np.median(frames.reshape(frames.shape[0], -1, 3), axis=1)[:, None, None, :]
    distance = np.linalg.norm(frames - background, axis=-1)
    contrast = np.percentile(distance.reshape(len(distance), -1), 99.5, axis=1)[:, None, None]
    raw = distance > np.maximum(0.5 * contrast, _MIN_FOREGROUND_DISTANCE)
    masks = np.zeros_like(raw)
    for i, mask in enumerate(raw):
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        if count > 1:
            masks[i] = labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return masks


def classify_colour(frames, masks=None):
    """The palette colour nearest to the median colour of the shape's pixels, or None if no shape is found."""
    masks = shape_masks(frames) if masks is None else masks
    if not masks.any():
        return None
    pixels = np.asarray(frames, np.float32)[masks]
    median = np.median(pixels, axis=0)
    names = list(COLOURS)
    distances = [np.linalg.norm(median - np.asarray(COLOURS[n], np.float32)) for n in names]
    return names[int(np.argmin(distances))]


def fill_ratio(mask):
    """Area of the region over the area of its bounding box (NaN when empty)."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return float("nan")
    return len(ys) / float((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))


def centroid_height(mask):
    """Height of the region's centroid within its bounding box, 0 = top edge, 1 = bottom edge (NaN when empty)."""
    ys = np.nonzero(mask)[0]
    if len(ys) == 0:
        return float("nan")
    return (ys.mean() - ys.min() + 0.5) / float(ys.max() - ys.min() + 1)


def classify_shape(frames, masks=None):
    """triangle (bottom-heavy region), else square / circle by the fill ratio of the bounding box; medians over
    the frames. None if no shape is found."""
    masks = shape_masks(frames) if masks is None else masks
    shown = [m for m in masks if m.any()]
    if not shown:
        return None
    if np.median([centroid_height(m) for m in shown]) >= _TRIANGLE_CENTROID:
        return "triangle"
    return "square" if np.median([fill_ratio(m) for m in shown]) >= _SQUARE_FILL else "circle"


def centroids(masks):
    """(T, 2) x, y centroid of each frame's mask (NaN where a frame has none)."""
    out = np.full((len(masks), 2), np.nan)
    for i, mask in enumerate(masks):
        ys, xs = np.nonzero(mask)
        if len(ys):
            out[i] = xs.mean(), ys.mean()
    return out


def classify_direction(frames, masks=None):
    """left / right / up / down from the least-squares slope of the centroid track; "none" when it hardly moves,
    None when fewer than two frames show a shape."""
    masks = shape_masks(frames) if masks is None else masks
    track = centroids(masks)
    seen = ~np.isnan(track[:, 0])
    if seen.sum() < 2:
        return None
    t = np.nonzero(seen)[0].astype(np.float64)
    vx, vy = (np.polyfit(t, track[seen, k], 1)[0] for k in (0, 1))
    if max(abs(vx), abs(vy)) < _MIN_MOTION:
        return "none"
    if abs(vx) >= abs(vy):
        return "right" if vx > 0 else "left"
    return "down" if vy > 0 else "up"


def classify(frames):
    """{"colour", "shape", "direction"} read from uint8 (T, H, W, 3) frames (direction None for one frame)."""
    masks = shape_masks(frames)
    return {"colour": classify_colour(frames, masks), "shape": classify_shape(frames, masks),
            "direction": classify_direction(frames, masks) if len(masks) > 1 else None}


# ---- datasets ----------------------------------------------------------------------------------------------------
DEFAULT_HOLDOUT = ("red circle left", "green triangle right", "blue square up", "yellow circle down")
# Start positions vary by up to 6 px (under one 8-px latent pixel) around the centred path. With starts anywhere
# (None) a caption's videos put the shape in ~25 places, and the toy DiT blended several of them into each sample.
DEFAULT_JITTER = 6
CSV_COLUMNS = ("video", "caption", "fps", "frames", "height", "width", "colour", "shape", "direction")


def parse_combo(text):
    """"red circle left" (or "red/circle/left") -> ("red", "circle", "left"), validated."""
    parts = text.replace("/", " ").split()
    if len(parts) != 3:
        raise ValueError(f"holdout combination {text!r} must be 'colour shape direction', e.g. 'red circle left'")
    check_labels(*parts)
    return tuple(parts)


def all_combos():
    return [(c, s, d) for c in COLOURS for s in SHAPES for d in DIRECTIONS]


def dataset_clip(seed, colour, shape, direction, k, height, width, num_frames, shape_size, position_jitter):
    """Clip k of a combination in the dataset written with these parameters (toy_world.json): drawn from
    default_rng([seed, index of the combination, k])."""
    i = all_combos().index((colour, shape, direction))
    return plan_clip(np.random.default_rng([seed, i, k]), colour, shape, direction, height, width, num_frames,
                     size=shape_size, jitter=position_jitter)


def write_toy_dataset(output_folder, seed=0, height=64, width=64, num_frames=17, fps=8, videos_per_combo=6,
                      images_per_pair=4, holdout=DEFAULT_HOLDOUT, position_jitter=DEFAULT_JITTER, shape_size=None):
    """Write the toy world into a new (or empty) folder and return {csv name: number of rows}.

    videos/*.mp4 for every (colour, shape, direction), images/*.png for every (colour, shape); train.csv lists the
    videos of the combinations not held out plus all images, heldout.csv the videos of the held-out combinations
    (CSV columns: CSV_COLUMNS). Shapes start within `position_jitter` pixels of the place that centres their path
    (None: anywhere the path fits; see DEFAULT_JITTER). Shapes are `shape_size` pixels wide (+-1/16; None: a quarter
    of the shorter side). toy_world.json records the parameters. Clip k of combination i is drawn from
    default_rng([seed, i, k]), so the clips do not depend on which are held out.
    """
    out = Path(output_folder)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; choose a new output folder")
    held = {parse_combo(h) if isinstance(h, str) else tuple(h) for h in holdout}
    if min(videos_per_combo, images_per_pair) < 0 or num_frames < 2:
        raise ValueError("videos_per_combo and images_per_pair must be >= 0 and num_frames >= 2")
    if shape_size is not None and shape_size < 2:
        raise ValueError(f"shape_size must be at least 2 pixels (None: a quarter of the frame), got {shape_size}")
    rows = {"train": [], "heldout": []}
    for colour, shape, direction in all_combos():
        for k in range(videos_per_combo):
            clip = dataset_clip(seed, colour, shape, direction, k, height, width, num_frames, shape_size,
                                position_jitter)
            name = f"videos/{colour}_{shape}_{direction}_{k:03d}.mp4"
            write_video(out / name, render(clip, height, width, num_frames), fps)
            split = "heldout" if (colour, shape, direction) in held else "train"
            rows[split].append((name, caption(colour, shape, direction, fps), fps, num_frames, height, width,
                                colour, shape, direction))
    for i, (colour, shape) in enumerate((c, s) for c in COLOURS for s in SHAPES):
        for k in range(images_per_pair):
            clip = plan_clip(np.random.default_rng([seed, 10_000 + i, k]), colour, shape, None, height, width, 1,
                             size=shape_size, jitter=position_jitter)
            name = f"images/{colour}_{shape}_{k:03d}.png"
            write_video(out / name, render(clip, height, width, 1), fps)
            rows["train"].append((name, caption(colour, shape), "", 1, height, width, colour, shape, ""))
    for split, records in rows.items():
        pd.DataFrame(records, columns=CSV_COLUMNS).to_csv(out / f"{split}.csv", index=False)
    params = dict(seed=seed, height=height, width=width, num_frames=num_frames, fps=fps,
                  videos_per_combo=videos_per_combo, images_per_pair=images_per_pair, position_jitter=position_jitter,
                  shape_size=shape_size,
                  holdout=[" ".join(h) for h in sorted(held)], background=BACKGROUND, colours=COLOURS)
    (out / "toy_world.json").write_text(json.dumps(params, indent=2))
    return {f"{split}.csv": len(records) for split, records in rows.items()}


# ---- adherence ---------------------------------------------------------------------------------------------------
ATTRIBUTES = ("colour", "shape", "direction")


def read_combos(csv_path, limit=None, seed=0):
    """Distinct (colour, shape, direction) video rows of a toy CSV with a caption each (images are skipped);
    `limit` picks that many at random (seeded)."""
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    missing = [c for c in ("video", "caption") + ATTRIBUTES if c not in table.columns]
    if missing:
        raise ValueError(f"{csv_path}: not a toy-world CSV (missing columns {missing}); "
                         "write it with tools/make_toy_dataset.py")
    videos = table[table["direction"] != ""].assign(csv_folder=str(Path(csv_path).parent))
    combos = videos.drop_duplicates(list(ATTRIBUTES)).reset_index(drop=True)
    if limit is not None and limit < len(combos):
        combos = combos.iloc[np.sort(np.random.default_rng(seed).choice(len(combos), limit, replace=False))]
    return combos, videos


def adherence(records):
    """Fraction of records whose predicted attribute equals the prompt's, per attribute and for all three at once.

    records: dicts with "<attr>" (asked for) and "pred_<attr>" (read from the pixels) for each of ATTRIBUTES.
    """
    if not records:
        raise ValueError("adherence needs at least one record")
    hits = {a: [r[a] == r[f"pred_{a}"] for r in records] for a in ATTRIBUTES}
    rates = {a: float(np.mean(h)) for a, h in hits.items()}
    rates["all"] = float(np.mean([all(h[i] for h in hits.values()) for i in range(len(records))]))
    return rates
