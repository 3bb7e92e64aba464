"""What a conditioned generation knows of the video it makes, as the transformer's `condition` input
(mg.models.dit, `DiTConfig.condition_channels` = latent channels + 1): the known latent, zero where unknown, and the
mask of what is known (1) on the latent grid, concatenated on channels.

The tasks are masks: image-to-video knows the first latent frame, continuation the first k, inpainting everything
outside a region, an edit the whole source video; text-to-video knows nothing (a zero condition, which the
zero-initialised condition weights make the same as no condition at all).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The tasks of a model with task embeddings (`DiTConfig.num_tasks` = len(TASKS)), after Emu Edit's task families:
# generation (text-to-video, or conditioned on frames), an edit of the object (its colour, its shape), of the whole
# scene (the background), removing or adding an object, and instruction-guided segmentation (marking an object).
GENERATE = "generate"
TASKS = (GENERATE, "local", "global", "remove", "add", "segment")


def task_index(name: str) -> int:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; the tasks are {list(TASKS)}")
    return TASKS.index(name)


def condition_input(latent: np.ndarray, known: np.ndarray) -> np.ndarray:
    """(B, C + 1, T, H, W) float32 from a latent (B, C, T, H, W) and a known-mask broadcastable to (B, 1, T, H, W)
    with values in {0, 1}."""
    latent = np.asarray(latent, np.float32)
    if latent.ndim != 5:
        raise ValueError(f"a condition latent must be (B, C, T, H, W), got shape {latent.shape}")
    known = np.broadcast_to(np.asarray(known, np.float32), (latent.shape[0], 1, *latent.shape[2:]))
    if not np.isin(known, (0.0, 1.0)).all():
        raise ValueError("a condition mask must hold only 0 (unknown) and 1 (known)")
    return np.concatenate([latent * known, known], axis=1)


def first_frames(latent: np.ndarray, frames: int) -> np.ndarray:
    """Image-to-video (`frames` = 1) and continuation: the first `frames` latent frames are known."""
    total = np.shape(latent)[2]
    if not 1 <= frames <= total:
        raise ValueError(f"the condition may give 1 to {total} latent frames of this video, not {frames}")
    known = np.zeros((1, 1, total, 1, 1), np.float32)
    known[:, :, :frames] = 1.0
    return condition_input(latent, known)


def outside_region(latent: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Inpainting: `region` (T, H, W) or (H, W) on the latent grid, 1 where the video is to be made anew; the rest is
    known."""
    region = np.asarray(region, np.float32)
    grid = np.shape(latent)[2:]
    if region.ndim == 2:
        region = np.broadcast_to(region, (grid[0], *region.shape))
    if region.shape != tuple(grid):
        raise ValueError(f"an inpainting region must be (T, H, W) = {tuple(grid)} or (H, W) = {tuple(grid[1:])} "
                         f"on the latent grid, got {region.shape}")
    return condition_input(latent, 1.0 - (region > 0.5))


def edit_input(source_latent: np.ndarray) -> np.ndarray:
    """An edit knows its whole source video: the condition input of the source's latent (B, C, T, H, W)."""
    return condition_input(source_latent, 1.0)


def region_on_latent_grid(pixel_mask: np.ndarray, compression=(8, 8, 8)) -> np.ndarray:
    """A pixel mask (F, H, W), 1 = region, on the latent grid of a TAE with `compression` (time, height, width):
    a latent cell belongs to the region if any of its pixels does (the region is never made smaller)."""
    mask = np.asarray(pixel_mask) > 0.5
    ct, ch, cw = compression
    f, h, w = mask.shape
    if h % ch or w % cw:
        raise ValueError(f"a mask of {h}x{w} pixels does not fall on the {ch}x{cw} latent grid")
    frames = -(-f // ct)
    padded = np.zeros((frames * ct, h, w), bool)
    padded[:f] = mask
    return padded.reshape(frames, ct, h // ch, ch, w // cw, cw).any(axis=(1, 3, 5)).astype(np.float32)


@dataclass(frozen=True)
class ConditionTasks:
    """What a training sample is conditioned on, drawn per sample: nothing (text-to-video, probability `none`), its
    first latent frames (image-to-video and continuation, `first_frames`: 1 to T - 1 of them, uniformly; videos
    only, an image gets nothing) or everything outside a region to inpaint (`region`: a box of 1/4 to 3/4 of each
    side over all frames). The probabilities sum to 1."""
    none: float = 0.5
    first_frames: float = 0.3
    region: float = 0.2

    def __post_init__(self):
        values = (self.none, self.first_frames, self.region)
        if min(values) < 0 or abs(sum(values) - 1) > 1e-6:
            raise ValueError(f"condition task probabilities must be >= 0 and sum to 1, got none={self.none}, "
                             f"first_frames={self.first_frames}, region={self.region}")

    def draw(self, latent: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The condition input (B, C + 1, T, H, W) of a batch of latents (B, C, T, H, W)."""
        latent = np.asarray(latent, np.float32)
        b, _, t, h, w = latent.shape
        known = np.zeros((b, 1, t, h, w), np.float32)
        for i, task in enumerate(rng.choice(3, size=b, p=[self.none, self.first_frames, self.region])):
            if task == 1 and t > 1:
                known[i, :, :rng.integers(1, t)] = 1.0
            elif task == 2:
                rows, cols = (max(1, int(rng.integers(-(-n // 4), n * 3 // 4 + 1))) for n in (h, w))
                top, left = rng.integers(0, h - rows + 1), rng.integers(0, w - cols + 1)
                known[i] = 1.0
                known[i, :, :, top:top + rows, left:left + cols] = 0.0
        return condition_input(latent, known)
