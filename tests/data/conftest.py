"""Real media files for the data tests: mp4 videos (OpenCV mp4v), PNG/JPEG images, corrupt/truncated/missing files.

Frame t of every video is a uniform grey of level `GREY_STEP * t + GREY_STEP // 2`, so a decoded frame tells which
source frame it is (mp4v's limited-range YUV darkens grey by 2-4 levels: the half step absorbs it).
"""
import csv
import os
from dataclasses import dataclass

import cv2
import numpy as np
import pytest

GREY_STEP = 6


def write_mp4(path, num_frames, height, width, fps):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    for t in range(num_frames):
        writer.write(np.full((height, width, 3), GREY_STEP * t + GREY_STEP // 2, dtype=np.uint8))
    writer.release()


def grey_level(frame: np.ndarray) -> int:
    """Index of the source frame a decoded uniform-grey frame came from."""
    return int(round(float(frame.mean()) / GREY_STEP))


@dataclass
class Media:
    folder: str
    landscape: str = "clips/landscape.mp4"  # 48x64, 40 frames at 20 FPS
    portrait: str = "clips/portrait.mp4"  # 64x48, 24 frames at 24 FPS
    image_png: str = "images/square.png"  # 40x40 pattern
    image_jpg: str = "images/wide.jpg"  # 30x60
    corrupt: str = "clips/corrupt.mp4"  # random bytes
    truncated: str = "clips/truncated.mp4"  # first third of a good mp4
    missing: str = "clips/missing.mp4"  # never written

    def path(self, name):
        return os.path.join(self.folder, name)


def png_pattern():
    """A 40x40 RGB image with distinct channel ramps (lossless in PNG)."""
    y, x = np.mgrid[0:40, 0:40]
    return np.stack([x * 6, y * 6, (x + y) * 3], axis=-1).astype(np.uint8)


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> Media:
    folder = tmp_path_factory.mktemp("media")
    m = Media(str(folder))
    os.makedirs(m.path("clips"))
    os.makedirs(m.path("images"))
    write_mp4(m.path(m.landscape), 40, 48, 64, 20)
    write_mp4(m.path(m.portrait), 24, 64, 48, 24)
    cv2.imwrite(m.path(m.image_png), cv2.cvtColor(png_pattern(), cv2.COLOR_RGB2BGR))
    cv2.imwrite(m.path(m.image_jpg), np.full((30, 60, 3), 128, np.uint8))
    with open(m.path(m.corrupt), "wb") as f:
        f.write(np.random.default_rng(0).bytes(4096))
    data = open(m.path(m.landscape), "rb").read()
    with open(m.path(m.truncated), "wb") as f:
        f.write(data[: len(data) // 3])
    return m


@pytest.fixture
def write_csv(tmp_path):
    """write_csv(rows, columns=("video", "caption"), name="data.csv") -> path of a CSV in the test's tmp dir."""

    def write(rows, columns=("video", "caption"), name="data.csv"):
        path = tmp_path / name
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            writer.writerows(rows)
        return str(path)

    return write


@pytest.fixture(name="grey_level")
def _grey_level_fixture():
    return grey_level


@pytest.fixture(name="png_pattern")
def _png_pattern_fixture():
    return png_pattern()
