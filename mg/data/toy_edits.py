"""Editing in the toy world: the instructions a toy user gives, what each does to a scene, and how an edited video
is judged from its pixels (did the edit happen; did what must not change stay: the object's path, the background).

A scene is a toy clip (mg.data.toy_world) with a background and, optionally, a small red square added in the top-left
corner (away from every path the toy world draws: paths are centred, so objects never reach it). Edits and their
inverses (what backtranslation asks of a model to undo an edit):

| instruction | task (mg.data.conditions.TASKS) | inverse |
|---|---|---|
| make it <colour> | local | make it <the old colour> |
| turn it into a <shape> | local | turn it into a <the old shape> |
| make the background <white or grey> | global | make the background <the old one> |
| remove the shape | remove | none (where it was is lost) |
| add a red square | add | remove the red square |
| remove the red square | remove | add a red square |
| mark the shape in black (segmentation) | segment | none |
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import cv2
import numpy as np

from mg.data.toy_world import (BACKGROUND, COLOURS, SHAPES, ToyClip, classify_colour, classify_direction,
                               classify_shape, render, shape_masks)

BACKGROUNDS = {"grey": BACKGROUND, "white": (255, 255, 255)}
ADDED_BOX = (2, 2, 12)  # x, y, size of the added red square: clear of every centred path of a 64x64 toy clip
ADDED_COLOUR = "red"
MARKER = (0, 0, 0)  # the colour segmentation paints the object with
KINDS = ("colour", "shape", "background", "remove", "add", "remove_added", "mark")
TASK_OF = {"colour": "local", "shape": "local", "background": "global", "remove": "remove", "add": "add",
           "remove_added": "remove", "mark": "segment"}
# The edits measured on held-out videos, one of each kind a toy user asks for (colour and shape: another one than the
# video's, chosen by `measured_edits`).
MEASURED_KINDS = ("colour", "shape", "background", "remove", "add")


@dataclass(frozen=True)
class Scene:
    """What a toy video shows: `clip` (None once removed) over a background, with or without the added square."""
    clip: Optional[ToyClip]
    background: str = "grey"
    added: bool = False


@dataclass(frozen=True)
class ToyEdit:
    kind: str
    value: str = ""  # the colour, shape or background asked for

    def __post_init__(self):
        allowed = {"colour": COLOURS, "shape": SHAPES, "background": BACKGROUNDS}.get(self.kind, ("",))
        if self.kind not in KINDS or self.value not in allowed:
            raise ValueError(f"no toy edit {self.kind!r} {self.value!r}: kinds {list(KINDS)}; colour, shape and "
                             f"background take one of {list(COLOURS)}, {list(SHAPES)}, {list(BACKGROUNDS)}")

    @property
    def instruction(self) -> str:
        return {"colour": f"make it {self.value}", "shape": f"turn it into a {self.value}",
                "background": f"make the background {self.value}", "remove": "remove the shape",
                "add": f"add a {ADDED_COLOUR} square", "remove_added": f"remove the {ADDED_COLOUR} square",
                "mark": "mark the shape in black"}[self.kind]

    @property
    def task(self) -> str:
        return TASK_OF[self.kind]

    def applies_to(self, scene: Scene) -> bool:
        """Whether the edit changes the scene (it asks for something the scene does not already show)."""
        clip = scene.clip
        return {"colour": clip is not None and clip.colour != self.value,
                "shape": clip is not None and clip.shape != self.value,
                "background": scene.background != self.value, "remove": clip is not None,
                "add": not scene.added, "remove_added": scene.added, "mark": clip is not None}[self.kind]

    def apply(self, scene: Scene) -> Scene:
        """The scene after the edit (segmentation is not a scene: see `mark`)."""
        if not self.applies_to(scene) or self.kind == "mark":
            raise ValueError(f"{self.instruction!r} does not change {scene}")
        if self.kind in ("colour", "shape"):
            return replace(scene, clip=replace(scene.clip, **{self.kind: self.value}))
        return {"background": lambda: replace(scene, background=self.value),
                "remove": lambda: replace(scene, clip=None),
                "add": lambda: replace(scene, added=True),
                "remove_added": lambda: replace(scene, added=False)}[self.kind]()

    def inverse(self, scene: Scene) -> Optional["ToyEdit"]:
        """The edit that takes `self.apply(scene)` back to `scene`, or None when the edited video no longer says
        what was there (a removed shape) or the edit is not an edit of the scene (segmentation)."""
        if self.kind in ("colour", "shape"):
            return ToyEdit(self.kind, getattr(scene.clip, self.kind))
        return {"background": ToyEdit("background", scene.background), "add": ToyEdit("remove_added"),
                "remove_added": ToyEdit("add")}.get(self.kind)


def parse_instruction(text: str) -> ToyEdit:
    """The toy edit an instruction asks for (what `ToyEdit.instruction` writes)."""
    for kind in KINDS:
        values = {"colour": COLOURS, "shape": SHAPES, "background": BACKGROUNDS}.get(kind, ("",))
        for value in values:
            if ToyEdit(kind, value).instruction == text.strip().lower():
                return ToyEdit(kind, value)
    raise ValueError(f"{text!r} is not a toy edit instruction (e.g. 'make it blue', 'turn it into a triangle', "
                     "'make the background white', 'remove the shape', 'add a red square')")


def render_scene(scene: Scene, height: int, width: int, num_frames: int) -> np.ndarray:
    """uint8 (T, H, W, 3) frames of the scene."""
    background = BACKGROUNDS[scene.background]
    if scene.clip is None:
        frames = np.empty((num_frames, height, width, 3), np.uint8)
        frames[:] = background
    else:
        frames = render(scene.clip, height, width, num_frames, background)
    if scene.added:
        x, y, size = ADDED_BOX
        frames[:, y:y + size, x:x + size] = COLOURS[ADDED_COLOUR]
    return frames


def mark(frames: np.ndarray) -> np.ndarray:
    """Instruction-guided segmentation's result: the frames with the object (as the toy classifiers find it,
    slightly grown to cover its blurred edge) painted in MARKER."""
    masks = shape_masks(frames)
    out = np.array(frames, copy=True)
    kernel = np.ones((3, 3), np.uint8)
    for i, mask in enumerate(masks):
        out[i][cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)] = MARKER
    return out


def measured_edits(colour: str, shape: str) -> list[ToyEdit]:
    """The edits measured on a held-out video of a `colour` `shape` on grey: the next colour and shape of the
    palette, a white background, removing the shape, adding the red square."""
    colours, shapes = list(COLOURS), list(SHAPES)
    return [ToyEdit("colour", colours[(colours.index(colour) + 1) % len(colours)]),
            ToyEdit("shape", shapes[(shapes.index(shape) + 1) % len(shapes)]),
            ToyEdit("background", "white"), ToyEdit("remove"), ToyEdit("add")]


# ---- judging an edited video ---------------------------------------------------------------------------------------
_RED_DISTANCE = 90.0     # RGB distance from the palette's red within which a pixel counts as red
_MARKED_DISTANCE = 60.0  # from MARKER


def background_name(frames: np.ndarray) -> str:
    """The background (BACKGROUNDS) nearest to the median colour of the frames' border pixels."""
    frames = np.asarray(frames, np.float32)
    border = np.concatenate([frames[:, :, -3:].reshape(-1, 3), frames[:, -3:, :].reshape(-1, 3),
                             frames[:, :, :1].reshape(-1, 3)])
    median = np.median(border, axis=0)
    return min(BACKGROUNDS, key=lambda name: np.linalg.norm(median - np.asarray(BACKGROUNDS[name], np.float32)))


def _red_share_in_box(frames: np.ndarray) -> np.ndarray:
    """Per frame, the share of the added square's pixels that are red."""
    x, y, size = ADDED_BOX
    box = np.asarray(frames, np.float32)[:, y:y + size, x:x + size]
    return (np.linalg.norm(box - np.asarray(COLOURS[ADDED_COLOUR], np.float32), axis=-1) < _RED_DISTANCE).mean(
        axis=(1, 2))


def _object_masks(frames: np.ndarray) -> np.ndarray:
    """The object's masks, the added square's box left out (it is not the object an edit's path is about)."""
    frames = np.array(frames, copy=True)
    x, y, size = ADDED_BOX
    frames[:, y:y + size, x:x + size] = np.median(frames.reshape(len(frames), -1, 3), axis=1)[:, None, None, :]
    return shape_masks(frames)


def _box_centres(masks: np.ndarray) -> np.ndarray:
    """(T, 2) x, y centre of each frame's mask's bounding box (NaN where a frame has none): where the object is,
    whatever its shape (a centroid moves when a circle becomes a triangle)."""
    out = np.full((len(masks), 2), np.nan)
    for i, mask in enumerate(masks):
        ys, xs = np.nonzero(mask)
        if len(ys):
            out[i] = (xs.min() + xs.max()) / 2.0, (ys.min() + ys.max()) / 2.0
    return out


def edit_succeeded(edit: ToyEdit, source: np.ndarray, output: np.ndarray) -> bool:
    """Whether `output` (uint8 (T, H, W, 3)) shows what `edit` asked of `source`, read by the toy classifiers."""
    if edit.kind == "colour":
        return classify_colour(output, _object_masks(output)) == edit.value
    if edit.kind == "shape":
        return classify_shape(output, _object_masks(output)) == edit.value
    if edit.kind == "background":
        return background_name(output) == edit.value
    if edit.kind == "remove":
        before = np.median(_object_masks(source).sum(axis=(1, 2)))
        return bool(np.mean(_object_masks(output).sum(axis=(1, 2)) > 0.25 * before) <= 0.1)
    if edit.kind in ("add", "remove_added"):
        shown = np.mean(_red_share_in_box(output) >= 0.5) >= 0.8
        return bool(shown if edit.kind == "add" else np.mean(_red_share_in_box(output) < 0.2) >= 0.8)
    masks = _object_masks(source)  # mark: the object's pixels are the marker's colour
    distance = np.linalg.norm(np.asarray(output, np.float32) - np.asarray(MARKER, np.float32), axis=-1)
    return bool(masks.any() and np.mean(distance[masks] < _MARKED_DISTANCE) >= 0.7)


def preservation(edit: ToyEdit, source: np.ndarray, output: np.ndarray) -> dict:
    """What must not change: `direction_kept` and `path_error_px` (median distance of the object's bounding-box
    centre from the source's, per frame) where the object stays; `background_change` (mean absolute change, 0-255,
    of the pixels away from the source object's bounding box and the added square) unless the edit is of the
    background."""
    result = {}
    source_masks, output_masks = _object_masks(source), _object_masks(output)
    if edit.kind not in ("remove", "mark"):
        result["direction_kept"] = classify_direction(output, output_masks) == classify_direction(source, source_masks)
        error = np.linalg.norm(_box_centres(output_masks) - _box_centres(source_masks), axis=1)
        result["path_error_px"] = float(np.nanmedian(error)) if np.isfinite(error).any() else float("nan")
    if edit.kind != "background":
        near = np.zeros(source_masks.shape, bool)  # the source object's bounding box (what an edit of it may
        for i, mask in enumerate(source_masks):    # touch), and the added square's
            ys, xs = np.nonzero(mask)
            if len(ys):
                near[i, max(0, ys.min() - 3):ys.max() + 4, max(0, xs.min() - 3):xs.max() + 4] = True
        x, y, size = ADDED_BOX
        near[:, max(0, y - 3):y + size + 3, max(0, x - 3):x + size + 3] = True
        away = ~near
        change = np.abs(np.asarray(output, np.float32) - np.asarray(source, np.float32)).mean(axis=-1)
        result["background_change"] = float(change[away].mean()) if away.any() else float("nan")
    return result


def judge(edit: ToyEdit, source: np.ndarray, output: np.ndarray) -> dict:
    """{"success": bool, and the preservation measures} of one edited video."""
    return {"success": edit_succeeded(edit, source, output), **preservation(edit, source, output)}
