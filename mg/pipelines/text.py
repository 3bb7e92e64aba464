"""Text conditioning for sampling: captions -> one (embedding, mask) pair per text encoder, in the order the DiT
expects, computed by encoders on the fly or read from the embedding cache (docs/data.md)."""
import os
from typing import Mapping, Optional

import numpy as np

from mg.data.text_cache import EMPTY_PROMPT, load_text_emb, text_emb_path
from mg.models.text_encoders import prepare_prompt


class TextConditioner:
    """Encodes captions for a model whose text inputs are `widths` ({kind: embedding width}, in model order).

    Each kind is served by `cache_folders[kind]` (precomputed embeddings, looked up by the exact prepared prompt)
    if given, else by `encoders[kind]` (anything with `encode(prompts) -> (emb, mask)`, e.g. a TextEncoder).
    The unconditional input of classifier-free guidance is the empty prompt without FPS prefix, exactly as text
    dropout presents it in training; a non-empty negative prompt is prepared like a caption.
    """

    def __init__(self, widths: Mapping[str, int], encoders: Optional[Mapping] = None,
                 cache_folders: Optional[Mapping[str, str]] = None):
        self.widths = dict(widths)
        self.encoders = dict(encoders or {})
        self.cache_folders = dict(cache_folders or {})
        missing = [k for k in self.widths if k not in self.encoders and k not in self.cache_folders]
        if missing:
            raise ValueError(f"the model needs text encoders {list(self.widths)}; no encoder checkpoint or "
                             f"embedding cache folder was given for {missing}")
        for kind, folder in self.cache_folders.items():
            if kind in self.widths and not os.path.isdir(folder):
                raise FileNotFoundError(f"text embedding cache folder for {kind!r} not found: {folder}")

    def _from_cache(self, kind, prompts):
        embs, masks = [], []
        for prompt in prompts:
            path = text_emb_path(self.cache_folders[kind], prompt)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"no cached {kind} embedding for prompt {prompt!r} (expected {path}); "
                                        "cache it with tools/cache_text_embeddings.py or give the encoder checkpoint")
            emb, mask = load_text_emb(path, prompt)
            embs.append(emb)
            masks.append(mask)
        if len({e.shape for e in embs}) > 1:
            raise ValueError(f"cached {kind} embeddings in {self.cache_folders[kind]} have different shapes "
                             f"{sorted({e.shape for e in embs})}; cache them with one max_length")
        return np.stack(embs), np.stack(masks)

    def _encode_kind(self, kind, prompts):
        if kind in self.cache_folders:
            emb, mask = self._from_cache(kind, prompts)
        else:
            emb, mask = self.encoders[kind].encode(list(prompts))
        if emb.shape[-1] != self.widths[kind]:
            raise ValueError(f"{kind} embeddings are {emb.shape[-1]}-wide but the model expects {self.widths[kind]}: "
                             "the text encoder does not match the one the model was trained with")
        return np.asarray(emb, np.float32), np.asarray(mask, np.float32)

    def encode(self, captions, fps: Optional[float]):
        """(embs, masks): tuples over the model's encoders of float32 (B, L, C) and (B, L) arrays.

        fps None (images) adds no "FPS-<n>" prefix, as in training.
        """
        pairs = [self._encode_kind(kind, [prepare_prompt(c, fps, kind) for c in captions]) for kind in self.widths]
        return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)

    def encode_negative(self, negative_prompt: str, batch: int, fps: Optional[float]):
        """The unconditional (embs, masks) for `batch` samples."""
        if negative_prompt == EMPTY_PROMPT:
            pairs = [self._encode_kind(kind, [EMPTY_PROMPT]) for kind in self.widths]
        else:
            pairs = [self._encode_kind(kind, [prepare_prompt(negative_prompt, fps, kind)]) for kind in self.widths]
        return (tuple(np.repeat(p[0], batch, axis=0) for p in pairs),
                tuple(np.repeat(p[1], batch, axis=0) for p in pairs))
