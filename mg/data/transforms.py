"""Frame sampling, aspect-preserving resize with centre crop, and conversion to model range.

Frame sampling is either at a target FPS (the source step is native_fps / target_fps frames), or every
`frame_stride`-th frame, or every frame (native FPS). The FPS the clip represents is what the caption's
"FPS-<n>" prefix reports, so it is computed here once for the dataset and both caching tools.
"""
from typing import Optional

import cv2
import numpy as np


def frame_step(native_fps: float, target_fps: Optional[float] = None, frame_stride: Optional[int] = None):
    """(step between sampled source frames, FPS of the sampled clip)."""
    if target_fps is not None and frame_stride is not None:
        raise ValueError("give either target_fps or frame_stride, not both")
    if target_fps is not None:
        if target_fps <= 0:
            raise ValueError(f"target_fps must be positive, got {target_fps}")
        if native_fps <= 0:
            raise ValueError(f"cannot sample at {target_fps} FPS: the source FPS is unknown ({native_fps})")
        return native_fps / target_fps, float(target_fps)
    stride = 1 if frame_stride is None else frame_stride
    if stride < 1:
        raise ValueError(f"frame_stride must be >= 1, got {frame_stride}")
    return float(stride), native_fps / stride


def span(num_out: int, step: float) -> int:
    """Number of source frames covered by `num_out` frames sampled `step` apart."""
    return int(np.floor((num_out - 1) * step + 1e-6)) + 1


def clip_indices(num_frames: int, num_out: int, step: float, start_fraction: float = 0.5) -> np.ndarray:
    """Indices of `num_out` frames `step` apart; the clip start is placed at `start_fraction` of the free range."""
    needed = span(num_out, step)
    if needed > num_frames:
        raise ValueError(f"{num_out} frames with step {step:g} need {needed} source frames, only {num_frames} exist")
    start = int(round(start_fraction * (num_frames - needed)))
    return start + np.floor(np.arange(num_out) * step + 1e-6).astype(np.int64)


def resize_center_crop(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scale (T, H, W, 3) frames so they cover height x width, keeping the aspect ratio, then crop the centre."""
    src_h, src_w = frames.shape[1:3]
    scale = max(height / src_h, width / src_w)
    new_h, new_w = max(height, int(round(src_h * scale))), max(width, int(round(src_w * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR  # area averaging avoids aliasing when shrinking
    top, left = (new_h - height) // 2, (new_w - width) // 2
    out = np.empty((frames.shape[0], height, width, frames.shape[3]), dtype=frames.dtype)
    for i, frame in enumerate(frames):
        if (new_h, new_w) != (src_h, src_w):
            frame = cv2.resize(frame, (new_w, new_h), interpolation=interpolation)
        out[i] = frame[top:top + height, left:left + width]
    return out


def to_model_range(frames: np.ndarray) -> np.ndarray:
    """uint8 (T, H, W, 3) -> float32 (3, T, H, W) in [-1, 1]."""
    return (frames.astype(np.float32).transpose(3, 0, 1, 2) / 127.5) - 1.0
