"""The training CSV: one row per video or image, with at least `video` (path) and `caption`.

Optional columns `fps`, `frames`, `height`, `width` describe the source file; where they are missing the file is
probed when its metadata is needed. The file is UTF-8; a row whose path or caption is not (or whose caption is
empty, where captions are needed) is skipped with a warning naming the file and line, like any other bad sample.

An edit's training rows (mg.data.conditions, Movie Gen Edit) add `source_video`, the video the instruction in
`caption` is applied to (`video` is the result), and `task`, the edit's task (mg.data.conditions.TASKS); rows
without them are text-to-video rows of the same table. A `task` the model does not know makes the whole file fail.

Personalization rows (Movie Gen's personalized video) add `reference_image`: an image of the subject the video is
to show (from the same clip, paired, or from another, cross-paired); rows without one show no given subject.
"""
import logging
import math
import os
from dataclasses import dataclass
from typing import Optional

import pandas as pd

from mg.data.conditions import GENERATE, TASKS

REQUIRED_COLUMNS = ("video", "caption")
OPTIONAL_COLUMNS = ("fps", "frames", "height", "width")
EDIT_COLUMNS = ("source_video", "task")
REFERENCE_COLUMN = "reference_image"
FILE_COLUMNS = ("video", "source_video", REFERENCE_COLUMN)  # the columns that name files, relative to the CSV's folder
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")

_logger = logging.getLogger(__name__)


def is_image(path: str) -> bool:
    """Images are recognised by extension and are treated as one-frame videos."""
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


@dataclass
class Row:
    """One CSV row. `video` is the path as written in the CSV, `path` the file on disk."""

    video: str
    path: str
    caption: str
    fps: Optional[float] = None
    frames: Optional[int] = None
    height: Optional[int] = None
    width: Optional[int] = None
    source_video: str = ""  # an edit's input video as written in the CSV ("" for text-to-video)
    source_path: str = ""
    task: str = GENERATE
    reference_image: str = ""  # the subject's reference image as written in the CSV ("" for none)
    reference_path: str = ""

    @property
    def is_image(self) -> bool:
        return is_image(self.video)


def _optional_number(value, cast):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return cast(value)


def read_table(csv_path: str, video_folder: str = "", require_captions: bool = True) -> list[Row]:
    """Read the CSV; relative `video` paths are resolved against `video_folder`. Rows with an empty caption are
    skipped unless `require_captions` is false (data that trains no text conditioning, e.g. the TAE's).

    Raises a ValueError naming the file if a required column is missing or a value cannot be parsed.
    """
    if not os.path.isfile(csv_path):
        raise FileNotFoundError(f"CSV file not found: {csv_path}")
    # bytes that are not UTF-8 become lone surrogates, so one bad row does not reject the whole file
    text_columns = ("video", "caption", REFERENCE_COLUMN) + EDIT_COLUMNS
    frame = pd.read_csv(csv_path, dtype={c: str for c in text_columns}, keep_default_na=False,
                        na_values={c: [""] for c in OPTIONAL_COLUMNS}, encoding="utf-8",
                        encoding_errors="surrogateescape")
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{csv_path}: missing required column(s) {missing}; found columns {list(frame.columns)}")
    rows = []
    for line, record in enumerate(frame.to_dict("records"), start=2):  # line 1 is the header
        if not record["video"]:
            raise ValueError(f"{csv_path}, line {line}: empty `video` path")
        problem = _text_problem(record["video"], record["caption"], require_captions)
        if problem:
            _logger.warning("%s, line %d: skipping %r: %s", csv_path, line, record["video"], problem)
            continue
        try:
            numbers = {
                "fps": _optional_number(record.get("fps"), float),
                "frames": _optional_number(record.get("frames"), int),
                "height": _optional_number(record.get("height"), int),
                "width": _optional_number(record.get("width"), int),
            }
        except (TypeError, ValueError) as error:
            raise ValueError(f"{csv_path}, line {line}: bad fps/frames/height/width value ({error})") from None
        edit = {"source_video": record.get("source_video", ""), "task": record.get("task", "") or GENERATE}
        if edit["task"] not in TASKS:
            raise ValueError(f"{csv_path}, line {line}: unknown task {edit['task']!r}; the tasks are {list(TASKS)}")
        if (edit["task"] == GENERATE) != (not edit["source_video"]):
            raise ValueError(f"{csv_path}, line {line}: an edit row needs both `source_video` and a `task` other "
                             f"than {GENERATE!r}; a text-to-video row neither")
        reference = record.get(REFERENCE_COLUMN, "")
        rows.append(Row(video=record["video"], path=_resolve(video_folder, record["video"]), caption=record["caption"],
                        source_path=_resolve(video_folder, edit["source_video"]), reference_image=reference,
                        reference_path=_resolve(video_folder, reference), **edit, **numbers))
    return rows


def _resolve(folder: str, path: str) -> str:
    return os.path.join(folder, path) if folder and path else path


def _not_utf8(text: str) -> bool:
    return any("\udc80" <= char <= "\udcff" for char in text)


def _text_problem(video: str, caption: str, require_caption: bool) -> str:
    """Why a row's text cannot be used, or ""."""
    if _not_utf8(video) or _not_utf8(caption):
        return "its path or caption is not UTF-8 text"
    if require_caption and not caption.strip():
        return "empty caption"
    return ""
