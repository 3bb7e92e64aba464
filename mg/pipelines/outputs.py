"""Writing generated videos: file names from prompt and seed, never replacing an existing file unless asked;
mp4 (mp4v), gif, or a folder of PNG frames (a single PNG for an image); optional latents (safetensors)."""
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import List

import numpy as np
from PIL import Image

from mg.io import save_safetensors
from mg.models.tae.media import to_uint8_frames, write_video

FORMATS = ("mp4", "gif", "png")
# Every file a video's stem can have (a folder of PNG frames has none): a stem is free only if none exists, so files
# of different runs never share a name.
OUTPUT_SUFFIXES = (".mp4", ".gif", ".png", "", ".latent.safetensors")

_logger = logging.getLogger(__name__)


@dataclass
class OutputOptions:
    """How generated videos are written.

    Args:
        formats: any of mp4, gif, png (a folder of frames; a single PNG for an image).
        save_latents: also write the sampled latents (<name>.latent.safetensors).
        overwrite: replace files of the same name instead of numbering the new ones.
    """
    formats: List[str] = field(default_factory=lambda: ["mp4"])
    save_latents: bool = False
    overwrite: bool = False


def slugify(prompt: str, max_length: int = 60) -> str:
    """A file-name-safe stem from a prompt: lower case words joined by '-', cut at `max_length` characters."""
    slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:max_length].rstrip("-")
    return slug or "empty-prompt"


def check_formats(formats):
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"unknown output format(s) {unknown or 'none given'}; choose from {FORMATS}")


def free_stem(folder: Path, stem: str, suffixes, overwrite: bool) -> str:
    """`stem`, or `stem-1`, `stem-2`, ... the first for which no output file exists (unless overwrite)."""
    candidate, n = stem, 0
    while not overwrite and any((folder / (candidate + s)).exists() for s in suffixes):
        n += 1
        candidate = f"{stem}-{n}"
    return candidate


def _write_gif(path, frames, fps):
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(round(1000 / fps)), loop=0)


def _write_png_frames(path, frames):
    if len(frames) == 1:
        write_video(path.with_suffix(".png"), frames, 1)
        return path.with_suffix(".png")
    folder = path.with_suffix("")
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        write_video(folder / f"{i:04d}.png", frame[None], 1)
    return folder


def save_video(folder, prompt, seed, video, fps, formats=("mp4",), latent=None, overwrite=False):
    """Write one video (3, T, H, W) in [-1, 1] as `<slug>_seed<seed>.<fmt>` for each format, and its latent if
    given (video None: the latent only); return the written paths. A one-frame video is written as a PNG image
    whatever the format.
    """
    check_formats(formats)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    frames = to_uint8_frames(video) if video is not None else None
    if frames is None:
        formats = []
    elif len(frames) == 1:
        formats = ["png"]
    stem = free_stem(folder, f"{slugify(prompt)}_seed{seed}", OUTPUT_SUFFIXES, overwrite)
    base = folder / stem
    paths = []
    for fmt in formats:
        if fmt == "mp4":
            paths.append(write_video(base.with_suffix(".mp4"), frames, fps))
        elif fmt == "gif":
            _write_gif(base.with_suffix(".gif"), frames, fps)
            paths.append(base.with_suffix(".gif"))
        else:
            paths.append(_write_png_frames(base, frames))
    if latent is not None:
        path = folder / (stem + ".latent.safetensors")
        meta = {"prompt": prompt, "seed": str(seed), "fps": str(fps)}
        save_safetensors(path, {"latent": np.ascontiguousarray(latent, np.float32)}, meta, overwrite=overwrite)
        paths.append(path)
    return paths


def save_report(folder, name, table, rates, records):
    """Write an evaluation's `rates` and per-video `records` (JSON-able; floats for NumPy numbers) as `<name>.json`
    and its Markdown `table` as `<name>.md` into `folder` (numbered names: an earlier report is never replaced),
    print the table and log where it went; return the stem."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = free_stem(folder, name, [".json", ".md"], overwrite=False)
    (folder / f"{stem}.json").write_text(json.dumps({"rates": rates, "records": records}, indent=1, default=float))
    (folder / f"{stem}.md").write_text(table + "\n")
    print(table)
    _logger.info("wrote %s/%s.json and .md", folder, stem)
    return stem
