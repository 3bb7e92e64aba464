"""Cached text embeddings: one safetensors file per prepared prompt per encoder.

The prompt actually encoded depends on the clip's FPS ("FPS-<n> " prefix for UL2/MetaCLIP), so files are keyed by
the SHA-256 of the exact prepared prompt: `<folder>/<hash[:2]>/<hash>.safetensors`, one folder per encoder.
Tensors: `emb` (L, C) float32 and `mask` (L,) uint8. Metadata: `prompt` (checked on load) and `kind`.
The null condition for classifier-free guidance is the encoding of the empty prompt `EMPTY_PROMPT` (no prefix).
"""
import hashlib
import os
from typing import Optional

import numpy as np
from safetensors import safe_open

from mg.io import save_safetensors

EMPTY_PROMPT = ""


def prepared_prompt(caption: str, fps: Optional[float], kind: str) -> str:
    """The string encoder `kind` encodes for `caption` sampled at `fps` (None for images)."""
    # Imported here so that dataset worker processes do not load the text-encoder stack (transformers) at start.
    from mg.models.text_encoders import prepare_prompt

    return prepare_prompt(caption, fps, kind)


def text_emb_path(folder: str, prompt: str) -> str:
    digest = hashlib.sha256(prompt.encode("utf-8")).hexdigest()
    return os.path.join(folder, digest[:2], digest + ".safetensors")


def save_text_emb(path: str, emb: np.ndarray, mask: np.ndarray, prompt: str, kind: str):
    save_safetensors(path, {"emb": np.ascontiguousarray(emb, np.float32), "mask": np.ascontiguousarray(mask, np.uint8)},
                     {"prompt": prompt, "kind": kind}, overwrite=True)


def read_text_emb_shape(path: str) -> tuple[int, int]:
    """The embedding's (length L, width C) of a cache file, without reading the tensors."""
    with safe_open(path, framework="numpy") as handle:
        length, width = handle.get_slice("emb").get_shape()
        return int(length), int(width)


def load_text_emb(path: str, prompt: str) -> tuple[np.ndarray, np.ndarray]:
    """(emb, mask) cached for `prompt`; raises if the file holds another prompt."""
    with safe_open(path, framework="numpy") as handle:
        stored = (handle.metadata() or {}).get("prompt")
        if stored != prompt:
            raise ValueError(f"{path} holds the embedding of {stored!r}, expected {prompt!r}")
        return handle.get_tensor("emb"), handle.get_tensor("mask")
