"""Reading videos and images as RGB uint8 frames: decord first, OpenCV as the fallback.

Every failure (missing, truncated or undecodable file) raises a `DecodeError` naming the file, so callers can log
and skip the sample.
"""
import logging
import os
from dataclasses import dataclass

import mindspore  # noqa: F401  (decord aborts the process if it is imported before mindspore)
import cv2
import decord
import numpy as np

from mg.data.table import is_image

_logger = logging.getLogger(__name__)


class DecodeError(RuntimeError):
    """A file that cannot be read or decoded."""


@dataclass
class VideoInfo:
    num_frames: int
    fps: float
    height: int
    width: int


def _read_image(path: str) -> np.ndarray:
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise DecodeError(f"cannot decode image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)[None]


def _check_exists(path: str):
    if not os.path.isfile(path):
        raise DecodeError(f"file not found: {path}")


def probe(path: str) -> VideoInfo:
    """Frame count, FPS and size of a video or image (images: one frame, fps 0)."""
    _check_exists(path)
    if is_image(path):
        image = _read_image(path)
        return VideoInfo(1, 0.0, image.shape[1], image.shape[2])
    try:
        reader = decord.VideoReader(path, num_threads=1)
        height, width = reader[0].shape[:2]
        return VideoInfo(len(reader), float(reader.get_avg_fps()), height, width)
    except Exception as error:  # decord raises its own and generic errors for bad files
        _logger.debug("decord cannot probe %s (%s); trying OpenCV", path, error)
    capture = cv2.VideoCapture(path)
    try:
        info = VideoInfo(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), float(capture.get(cv2.CAP_PROP_FPS)),
                         int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)))
    finally:
        capture.release()
    if info.num_frames <= 0 or info.height <= 0 or info.width <= 0:
        raise DecodeError(f"cannot decode video {path}")
    return info


def _read_with_opencv(path: str, indices: np.ndarray) -> np.ndarray:
    wanted = set(int(i) for i in indices)
    frames = {}
    capture = cv2.VideoCapture(path)
    try:
        index = 0
        while index <= max(wanted):
            ok, frame = capture.read()
            if not ok:
                break
            if index in wanted:
                frames[index] = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        capture.release()
    if len(frames) < len(wanted):
        raise DecodeError(f"cannot decode frames {sorted(wanted - frames.keys())[:5]}... of video {path} "
                          f"(decoded {index} frames)")
    return np.stack([frames[int(i)] for i in indices])


def read_frames(path: str, indices) -> np.ndarray:
    """The frames at `indices` as uint8 (T, H, W, 3) RGB. Images return one frame whatever the indices."""
    _check_exists(path)
    if is_image(path):
        return _read_image(path)
    indices = np.asarray(indices, dtype=np.int64)
    try:
        reader = decord.VideoReader(path, num_threads=1)
        if indices.max() >= len(reader):
            raise DecodeError(f"video {path} has {len(reader)} frames, frame {indices.max()} requested")
        return reader.get_batch(indices).asnumpy()
    except DecodeError:
        raise
    except Exception as error:
        _logger.debug("decord cannot read %s (%s); trying OpenCV", path, error)
    return _read_with_opencv(path, indices)
