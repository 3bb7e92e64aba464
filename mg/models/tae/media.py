"""Model-range videos <-> files for the TAE tools: (3, T, H, W) in [-1, 1] to uint8 frames, mp4 or PNG."""
from pathlib import Path

import cv2
import numpy as np


def to_uint8_frames(video):
    """float (3, T, H, W) in [-1, 1] -> uint8 (T, H, W, 3) RGB."""
    return np.clip(np.round((np.asarray(video).transpose(1, 2, 3, 0) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def write_video(path, frames, fps):
    """Write uint8 (T, H, W, 3) RGB frames: a PNG when the path ends in .png (T must be 1), else mp4 (mp4v)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".png":
        if len(frames) != 1:
            raise ValueError(f"write_video: {path} is a PNG but {len(frames)} frames were given")
        if not cv2.imwrite(str(path), cv2.cvtColor(frames[0], cv2.COLOR_RGB2BGR)):
            raise OSError(f"write_video: cannot write {path}")
        return path
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height))
    if not writer.isOpened():
        raise OSError(f"write_video: cannot open {path} for writing")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path
