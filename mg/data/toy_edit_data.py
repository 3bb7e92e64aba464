"""Training data of the toy world's editing model, stage by stage as Movie Gen Edit trains without supervised video
edits (docs/editing.md). Every builder writes files into the toy dataset's folder (so the text-to-video rows and the
latent cache keys stay as train.csv has them) and returns CSV rows (mg.data.table, with `source_video` and `task`):

- stage I, image edits: a still scene rendered before and after an edit (a one-frame video edit);
- stage II, animated frames: an image edit pair moved by one random affine path (rotation, zoom, shift of the whole
  frame), identical for both, so it becomes a video pair; and instruction-guided segmentation of the real training
  videos (the object marked in black where the toy classifier finds it);
- stage III, backtranslation (tools/make_toy_edit_data.py backtranslate): the stage-II model edits real training
  videos; outputs the toy classifiers accept become inputs, the inverse instruction the caption and the real video
  the target.

No row pairs two real toy videos as input and edited result: stage I and II targets are renders of stills or warps of
them, segmentation targets are derived from the video itself, backtranslation's targets are the real videos.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from mg.data.toy_edits import ADDED_BOX, Scene, ToyEdit, mark, render_scene
from mg.data.toy_world import COLOURS, SHAPES, all_combos, plan_clip
from mg.data.video_io import probe, read_frames
from mg.models.tae.media import write_video

UNANIMATED = ("add", "remove_added")
EDIT_CSV_COLUMNS = ("video", "caption", "fps", "frames", "height", "width", "source_video", "task")


def toy_world_params(folder) -> dict:
    """The parameters a toy dataset folder was written with (its toy_world.json)."""
    path = Path(folder) / "toy_world.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {folder} is not a toy dataset (tools/make_toy_dataset.py)")
    return json.loads(path.read_text())


def _row(video, instruction, fps, frames, height, width, source="", task="generate"):
    return dict(zip(EDIT_CSV_COLUMNS, (video, instruction, fps, frames, height, width, source, task)))


def _clear_of_added_square(clip) -> bool:
    x, y, size = ADDED_BOX
    margin = 2
    return clip.x0 > x + size + margin or clip.y0 > y + size + margin


def _still(rng, colour, shape, params, jitter=None):
    """A still clip anywhere in the frame (or within `jitter` of the centre) that leaves the added square's corner
    free."""
    while True:
        clip = plan_clip(rng, colour, shape, None, params["height"], params["width"], 1, size=params["shape_size"],
                         jitter=jitter)
        if _clear_of_added_square(clip):
            return clip


def scene_edits(scene: Scene, rng) -> list[ToyEdit]:
    """The edits a source scene is given: from the plain grey scene every colour, shape, background, removal and
    addition it can take; from a white one or one with the added square, the edits that undo those (backtranslation
    asks for them) and one colour and one shape change."""
    clip = scene.clip
    colours = [ToyEdit("colour", c) for c in COLOURS if c != clip.colour]
    shapes = [ToyEdit("shape", s) for s in SHAPES if s != clip.shape]
    if scene.background == "grey" and not scene.added:
        return colours + shapes + [ToyEdit("background", "white"), ToyEdit("remove"), ToyEdit("add")]
    undo = ToyEdit("background", "grey") if scene.background != "grey" else ToyEdit("remove_added")
    return [undo, colours[rng.integers(len(colours))], shapes[rng.integers(len(shapes))]]


def source_scenes(clip) -> list[Scene]:
    return [Scene(clip), Scene(clip, background="white"), Scene(clip, added=True)]


def write_image_edits(folder, seed=0, stills_per_pair=6) -> list[dict]:
    """Stage I: for `stills_per_pair` stills of every (colour, shape), each source scene (`source_scenes`) and each
    of its edits (`scene_edits`), the one-frame pair as PNGs under edits/images/."""
    folder, params = Path(folder), toy_world_params(folder)
    h, w = params["height"], params["width"]
    rows = []
    for i, (colour, shape) in enumerate((c, s) for c in COLOURS for s in SHAPES):
        for k in range(stills_per_pair):
            rng = np.random.default_rng([seed, 20_000 + i, k])
            clip = _still(rng, colour, shape, params)
            for j, scene in enumerate(source_scenes(clip)):
                source = f"edits/images/{colour}_{shape}_{k:03d}_{j}.png"
                write_video(folder / source, render_scene(scene, h, w, 1), params["fps"])
                for edit in scene_edits(scene, rng):
                    target = f"edits/images/{colour}_{shape}_{k:03d}_{j}_{edit.kind}_{edit.value or 'x'}.png"
                    write_video(folder / target, render_scene(edit.apply(scene), h, w, 1), params["fps"])
                    rows.append(_row(target, edit.instruction, "", 1, h, w, source, edit.task))
    return rows


def affine_path(rng, num_frames, height, width, max_shift=10.0, max_angle=20.0, max_zoom=0.15) -> np.ndarray:
    """(T, 2, 3) affine maps of a smooth random camera-like motion: rotation, zoom and shift growing linearly from
    the identity at frame 0 (about the frame's centre)."""
    angle, zoom = rng.uniform(-max_angle, max_angle), 1 + rng.uniform(-max_zoom, max_zoom)
    shift = rng.uniform(-max_shift, max_shift, 2)
    maps = []
    for t in np.linspace(0.0, 1.0, num_frames):
        m = cv2.getRotationMatrix2D((width / 2.0, height / 2.0), angle * t, 1 + (zoom - 1) * t)
        m[:, 2] += shift * t
        maps.append(m)
    return np.stack(maps)


def animate(image: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """A still (H, W, 3) moved along affine `maps` -> (T, H, W, 3); the border repeats (the toy's plain background)."""
    h, w = image.shape[:2]
    return np.stack([cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                     for m in maps])


def write_animated_edits(folder, seed=0, count=480) -> list[dict]:
    """Stage II, animated frame editing: `count` image-edit pairs (a still near the centre, a random source scene
    and edit) both moved along one random affine path, as mp4 videos of the dataset's length under edits/animated/.
    Adding or removing the corner square is left out (UNANIMATED): the toy's added square stays in its corner, and
    a moving frame would carry it away."""
    folder, params = Path(folder), toy_world_params(folder)
    h, w, frames, fps = params["height"], params["width"], params["num_frames"], params["fps"]
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    rows = []
    for k in range(count):
        rng = np.random.default_rng([seed, 30_000, k])
        colour, shape = pairs[rng.integers(len(pairs))]
        scene = source_scenes(_still(rng, colour, shape, params, jitter=params.get("position_jitter") or 6))[
            rng.choice(2, p=[0.8, 0.2])]
        edits = [e for e in scene_edits(scene, rng) if e.kind not in UNANIMATED]
        edit = edits[rng.integers(len(edits))]
        maps = affine_path(rng, frames, h, w)
        source, target = f"edits/animated/{k:04d}_source.mp4", f"edits/animated/{k:04d}_{edit.kind}.mp4"
        write_video(folder / source, animate(render_scene(scene, h, w, 1)[0], maps), fps)
        write_video(folder / target, animate(render_scene(edit.apply(scene), h, w, 1)[0], maps), fps)
        rows.append(_row(target, edit.instruction, fps, frames, h, w, source, edit.task))
    return rows


def write_marked(folder, csv_path) -> list[dict]:
    """Stage II, instruction-guided segmentation: each video of a toy CSV (the real training videos) with its object
    marked in black (toy_edits.mark), under edits/marked/; the source is the real video."""
    folder = Path(folder)
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    rows = []
    instruction = ToyEdit("mark").instruction
    for record in table[table["direction"] != ""].to_dict("records"):
        path = folder / record["video"]
        frames = read_frames(str(path), np.arange(probe(str(path)).num_frames))
        target = f"edits/marked/{Path(record['video']).stem}.mp4"
        write_video(folder / target, mark(frames), float(record["fps"]))
        rows.append(_row(target, instruction, record["fps"], record["frames"], record["height"], record["width"],
                         record["video"], ToyEdit("mark").task))
    return rows


SCENE_VARIANTS = {"white": Scene(None, "white"), "added": Scene(None, added=True),
                  "white_added": Scene(None, "white", added=True)}


def write_scene_videos(folder, seed=0) -> list[dict]:
    """Videos for the TAE (not edit pairs): a clip of every training combination in each scene an edit can leave
    (white background, the added square, both, the shape removed, the shape marked in black), under edits/scenes/;
    returned as text-to-video rows. A TAE trained on the toy world alone draws these as patterns."""
    folder, params = Path(folder), toy_world_params(folder)
    h, w, frames, fps = params["height"], params["width"], params["num_frames"], params["fps"]
    held = {tuple(c.split()) for c in params["holdout"]}
    rows = []
    for i, (colour, shape, direction) in enumerate(c for c in all_combos() if c not in held):
        rng = np.random.default_rng([seed, 40_000, i])
        clip = plan_clip(rng, colour, shape, direction, h, w, frames, size=params["shape_size"],
                         jitter=params["position_jitter"])
        videos = {name: render_scene(replace(scene, clip=clip), h, w, frames)
                  for name, scene in SCENE_VARIANTS.items()}
        videos["removed"] = render_scene(Scene(None, ["grey", "white"][i % 2]), h, w, frames)
        videos["marked"] = mark(render_scene(Scene(clip), h, w, frames))
        for name, video in videos.items():
            path = f"edits/scenes/{colour}_{shape}_{direction}_{name}.mp4"
            write_video(folder / path, video, fps)
            rows.append(_row(path, f"a {colour} {shape} moving {direction}, {name}", fps, frames, h, w))
    return rows


def text_to_video_rows(csv_path) -> list[dict]:
    """The videos of a toy CSV as text-to-video rows (no source, task generate)."""
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    return [_row(r["video"], r["caption"], r["fps"], r["frames"], r["height"], r["width"])
            for r in table[table["direction"] != ""].to_dict("records")]


def write_edit_csv(path, rows) -> int:
    """Write rows as an edit-training CSV (refusing to replace an existing file); returns the row count."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; remove it or choose another name")
    pd.DataFrame(rows, columns=EDIT_CSV_COLUMNS).to_csv(path, index=False)
    return len(rows)
