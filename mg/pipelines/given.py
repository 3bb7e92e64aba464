"""What a conditioned generation is given (a model with `condition_channels`): an image to start from, a video to
continue, or a video and a mask to inpaint (GivenOptions); or a video to edit by the instruction in the prompt
(EditOptions, a model with task embeddings too); or reference images of the subject (a model with a reference
tower). Read from files, checked before any work, turned into the
transformer's condition input (mg.data.conditions) through the TAE.

The TAE makes a latent frame of every `temporal_compression` pixel frames, so what is known is known in whole latent
frames: a continuation keeps a multiple of that many frames, and an image to start from fills the first latent
frame as a still (the first frames of the video show it; the motion starts from there).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from mindspore import Tensor

from mg.data.conditions import GENERATE, TASKS, edit_input, first_frames, outside_region, region_on_latent_grid
from mg.data.transforms import resize_center_crop, to_model_range
from mg.data.video_io import DecodeError, probe, read_frames


@dataclass
class GivenOptions:
    """image: the video starts from this image (image-to-video). video: a video to continue (with `frames`) or to
    inpaint (with `mask`). frames: how many of its first frames the output keeps (a multiple of the TAE's temporal
    compression). mask: an image or video, white where the output is made anew (inpainting); the rest of `video` is
    kept. keep: put the given latent frames or region back into the sampled latent before decoding (`keep_given`),
    so the output shows what was given as exactly as the TAE can; false shows the model's own rendering of it."""
    image: Optional[str] = None
    video: Optional[str] = None
    frames: Optional[int] = None
    mask: Optional[str] = None
    keep: bool = True

    @property
    def given(self) -> bool:
        """Whether any option is set (then `check` must pass)."""
        return any(value is not None for value in (self.image, self.video, self.frames, self.mask))

    def check(self, num_frames: int, temporal_compression: int) -> None:
        """Refuse, before any work, options that do not make one task or files that cannot be read."""
        if self.image is not None and (self.video, self.frames, self.mask) != (None, None, None):
            raise ValueError("--condition.image starts a video from an image: do not combine it with "
                             "--condition.video, --condition.frames or --condition.mask")
        if self.video is None:
            if self.frames is not None or self.mask is not None:
                raise ValueError("--condition.frames and --condition.mask apply to --condition.video: give it")
        elif (self.frames is None) == (self.mask is None):
            raise ValueError("--condition.video needs either --condition.frames (continue its first frames) or "
                             "--condition.mask (inpaint where the mask is white)")
        if self.frames is not None and (self.frames < 1 or self.frames % temporal_compression
                                        or self.frames >= num_frames):
            raise ValueError(f"--condition.frames {self.frames}: keep a multiple of {temporal_compression} frames "
                             f"(the TAE makes a latent frame of every {temporal_compression}), fewer than the "
                             f"{num_frames} generated")
        for option, path in (("image", self.image), ("video", self.video), ("mask", self.mask)):
            if path is not None:
                _check_readable(f"condition.{option}", path,
                                {"image": 1, "video": self.frames or num_frames, "mask": 1}[option])


def _check_readable(option, path, wanted):
    try:
        info = probe(path)
    except DecodeError as err:
        raise ValueError(f"--{option} {path}: {err}") from None
    if info.num_frames < wanted:
        raise ValueError(f"--{option} {path} has {info.num_frames} frames; {wanted} are needed")


# Words that say which task an instruction is (Emu Edit predicts the task from the instruction; these rules do it for
# plain instructions, and --edit.task says it outright).
_TASK_WORDS = (("segment", ("mark ", "segment", "highlight")), ("remove", ("remove", "delete", "erase")),
               ("add", ("add ", "insert", "put ")), ("global", ("background", "style", "weather", "scene")))


def instruction_task(instruction: str) -> str:
    """The task of an edit instruction (mg.data.conditions.TASKS) read from its words; an edit of the object
    ("local") when no rule says otherwise."""
    text = f" {instruction.lower()} "
    for task, words in _TASK_WORDS:
        if any(word in text for word in words):
            return task
    return "local"


@dataclass
class EditOptions:
    """video: the video to edit; the prompts are the instructions ("make it blue"), one edited video each. task: the
    edits' task (mg.data.conditions.TASKS, not generate); None reads each instruction's (`instruction_task`)."""
    video: Optional[str] = None
    task: Optional[str] = None

    @property
    def given(self) -> bool:
        return self.video is not None or self.task is not None

    def check(self, num_frames: int) -> None:
        if self.video is None:
            raise ValueError("--edit.task applies to --edit.video: give the video to edit")
        if self.task is not None and (self.task not in TASKS or self.task == GENERATE):
            raise ValueError(f"--edit.task {self.task!r}: choose one of {[t for t in TASKS if t != GENERATE]}")
        _check_readable("edit.video", self.video, num_frames)

    def task_of(self, instruction: str) -> str:
        return self.task or instruction_task(instruction)


def edit_latent(edit: EditOptions, tae, num_frames: int, height: int, width: int) -> np.ndarray:
    """The condition input (1, C + 1, T', h, w) of an edit: the whole source video is known."""
    pixels = _pixels(edit.video, num_frames, height, width)
    return edit_input(tae.scale_latent(tae.encode(_tensor(pixels), tiled=True)[0]).asnumpy())


def _pixels(path, frames, height, width):
    """(3, frames, height, width) in [-1, 1]: the first `frames` frames (an image: repeated), resized and cropped."""
    count = probe(path).num_frames
    frames_read = read_frames(path, np.arange(min(frames, count)))
    if len(frames_read) < frames:  # an image, or a one-frame mask
        frames_read = np.repeat(frames_read[-1:], frames, axis=0)
    return to_model_range(resize_center_crop(frames_read, height, width))


def condition_latent(given: GivenOptions, tae, num_frames: int, height: int, width: int) -> np.ndarray:
    """The condition input (1, C + 1, T', h, w) for a `num_frames` x height x width video."""
    step = tae.config.temporal_compression
    if given.image is not None or given.frames is not None:
        kept = step if given.image is not None else given.frames
        pixels = _pixels(given.image or given.video, kept, height, width)
        known = tae.scale_latent(tae.encode(_tensor(pixels))[0]).asnumpy()
        latent = np.zeros((1, known.shape[1], tae.latent_frames(num_frames), *known.shape[3:]), np.float32)
        latent[:, :, :known.shape[2]] = known
        return first_frames(latent, known.shape[2])
    pixels = _pixels(given.video, num_frames, height, width)
    latent = tae.scale_latent(tae.encode(_tensor(pixels), tiled=True)[0]).asnumpy()
    mask = (_pixels(given.mask, num_frames, height, width).mean(axis=0) > 0).astype(np.float32)
    compression = (step, tae.config.spatial_compression, tae.config.spatial_compression)
    return outside_region(latent, region_on_latent_grid(mask, compression))


def keep_given(latents: np.ndarray, given: np.ndarray) -> np.ndarray:
    """Sampled latents (B, C, T', h, w) with the known part of a condition input (1, C + 1, T', h, w) put back: where
    its mask (the last channel) is 1 the given latent, elsewhere the sample."""
    known = given[:, -1:]
    return latents * (1.0 - known) + given[:, :-1]


def check_reference_images(paths) -> None:
    """Refuse, before any work, reference images that cannot be read."""
    for path in paths:
        _check_readable("reference_image", path, 1)


def reference_pixels(paths, size: int) -> np.ndarray:
    """(R, 3, size, size) in [-1, 1]: each reference image's first frame, resized and centre-cropped to the
    reference tower's input."""
    check_reference_images(paths)
    return np.stack([to_model_range(resize_center_crop(read_frames(path, [0])[:1], size, size))[:, 0]
                     for path in paths])


def _tensor(pixels):
    return Tensor(pixels[None])
