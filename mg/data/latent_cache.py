"""Cached TAE latents: one safetensors file per CSV video, `<folder>/<video path as in the CSV>.safetensors`.

Tensors: `mean` and `std` (C, T', H', W') float32, the raw (unscaled) TAE posterior, std = exp(0.5 * logvar).
Metadata (strings): `video` (the CSV path), `fps` (FPS of the sampled clip), `frames`, `height`, `width` (the pixel
shape the clip was sampled/cropped to) and `format`.
"""
import os

import numpy as np
from safetensors import safe_open

from mg.io import load_safetensors, save_safetensors

LATENT_FORMAT = "mg-tae-latent-1"


def latent_path(folder: str, video: str) -> str:
    """Cache file of the CSV path `video`: the path mirrored under `folder` (absolute paths lose their root)."""
    relative = os.path.normpath(video).lstrip(os.sep)
    if relative.startswith(".."):
        raise ValueError(f"video path {video!r} leaves its folder; use paths below the video folder")
    return os.path.join(folder, relative + ".safetensors")


def save_latent(path: str, mean: np.ndarray, std: np.ndarray, video: str, fps: float, frames: int, height: int,
                width: int):
    metadata = {"video": video, "fps": repr(float(fps)), "frames": str(frames), "height": str(height),
                "width": str(width), "format": LATENT_FORMAT}
    arrays = {"mean": np.ascontiguousarray(mean, np.float32), "std": np.ascontiguousarray(std, np.float32)}
    save_safetensors(path, arrays, metadata, overwrite=True)


def read_latent_header(path: str) -> tuple[tuple, dict]:
    """(latent shape (C, T', H', W'), metadata) without reading the tensors."""
    with safe_open(path, framework="numpy") as handle:
        metadata = handle.metadata() or {}
        if metadata.get("format") != LATENT_FORMAT or set(handle.keys()) != {"mean", "std"}:
            raise ValueError(f"{path} is not a latent cache file written by tools/cache_tae_latents.py")
        return tuple(handle.get_slice("mean").get_shape()), metadata


def load_latent(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) arrays of a cache file."""
    tensors = load_safetensors(path)
    return tensors["mean"], tensors["std"]
