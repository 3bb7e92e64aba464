"""Frozen text encoders behind one interface: prompts in, (embedding, mask) NumPy arrays out."""
import logging
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import Tensor

from mg.models.hf_checkpoint import checkpoint_dir, interpolate_positions, load_weights, read_config
from .clip import CLIPTextConfig, CLIPTextTransformer
from .prompts import check_kind
from .t5 import T5Config, T5Encoder

logger = logging.getLogger(__name__)

MODEL_TYPES = {"ul2": ("t5", "mt5"), "byt5": ("t5", "mt5"), "metaclip": ("clip", "clip_text_model")}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "spiece.model", "vocab.json")


class TextEncoder:
    """encode(prompts) -> emb float32 (B, max_length, hidden_size), mask uint8 (B, max_length).

    Prompts are padded/truncated to max_length tokens; the first truncation is logged as a warning (a caption
    that loses its end is easy to miss). Padded positions hold the model's output for pad tokens; the mask says
    which to ignore. For ByT5 an empty prompt (no visual text) gives a zero embedding and an all-zero mask.
    """

    def __init__(self, kind: str, model, tokenizer, max_length: int):
        self.kind = kind
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.hidden_size = model.hidden_size
        self.warned_truncation = False

    def encode(self, prompts):
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise TypeError("encode expects a list of str prompts")
        batch = len(prompts)
        emb = np.zeros((batch, self.max_length, self.hidden_size), np.float32)
        mask = np.zeros((batch, self.max_length), np.uint8)
        rows = [i for i, p in enumerate(prompts) if self.kind != "byt5" or p.strip()]
        if not rows:
            return emb, mask
        texts = [prompts[i] for i in rows]
        tokens = self.tokenizer(texts, padding="max_length", max_length=self.max_length, truncation=True,
                                return_tensors="np")
        ids, attn = tokens["input_ids"].astype(np.int32), tokens["attention_mask"].astype(np.int32)
        if not self.warned_truncation:
            # only a prompt that fills max_length can have been cut: tokenize just those again, uncut
            self._warn_if_truncated([t for t, n in zip(texts, attn.sum(axis=1)) if n == self.max_length])
        out = self.model(Tensor(ids), Tensor(attn))
        emb[rows] = out.astype(ms.float32).asnumpy()
        mask[rows] = attn
        return emb, mask

    def _warn_if_truncated(self, texts):
        if not texts:
            return
        lengths = [len(ids) for ids in self.tokenizer(texts)["input_ids"]]
        longest = int(np.argmax(lengths))
        if lengths[longest] > self.max_length:
            self.warned_truncation = True
            logger.warning("%s: a prompt of %d tokens is cut to max_length %d (raise it to keep the whole caption; "
                           "further truncations are not reported): %r", self.kind, lengths[longest], self.max_length,
                           texts[longest])


def load_tokenizer(kind: str, path: Path, vocab_size: int):
    """The checkpoint directory's own tokenizer; ByT5's needs no files and is built when none are there."""
    from transformers import AutoTokenizer, ByT5Tokenizer  # deferred: transformers is slow to import

    if any((path / f).is_file() for f in TOKENIZER_FILES):
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    elif kind == "byt5":
        tokenizer = ByT5Tokenizer()
    else:
        raise FileNotFoundError(f"{path}: no tokenizer files (one of {TOKENIZER_FILES}) for the {kind} encoder")
    if len(tokenizer) > vocab_size:
        raise ValueError(f"{path}: tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {vocab_size}")
    return tokenizer


def _t5_name(name: str):
    if name in ("shared.weight", "encoder.embed_tokens.weight"):
        return "embed_tokens.weight"
    return name[len("encoder."):] if name.startswith("encoder.") else None  # decoder / lm_head are not used


def _clip_name(name: str):
    # CLIPModel and transformers 4 CLIPTextModel files prefix the tower with "text_model."; transformers 5
    # CLIPTextModel files do not. Vision tower, projections and position_ids buffers are not used.
    name = name[len("text_model."):] if name.startswith("text_model.") else name
    if name.endswith("position_ids") or not name.startswith(("embeddings.", "encoder.", "final_layer_norm.")):
        return None
    return name


def _resize_positions(name: str, array: np.ndarray, shape: tuple) -> np.ndarray:
    if name == "embeddings.position_embedding.weight" and array.shape[0] < shape[0]:
        return interpolate_positions(array, shape[0])
    return array


def build_text_encoder(kind: str, path, max_length: int, dtype=ms.float32) -> TextEncoder:
    """Load a frozen encoder from a local Hugging Face-format directory (config.json, safetensors, tokenizer).

    kind: "ul2" or "byt5" (T5 encoder) or "metaclip" (CLIP text transformer). For metaclip a max_length beyond the
    checkpoint's position table extends the table by linear interpolation (e.g. 77 -> 256).
    dtype: weight dtype (float32 on CPU; bfloat16 is for Ascend). Norms and softmax always run in float32.
    """
    check_kind(kind)
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length <= 0:
        raise ValueError(f"max_length must be a positive int, got {max_length!r}")
    path = checkpoint_dir(path)
    raw = read_config(path)
    source = str(path / "config.json")
    model_type = raw.get("model_type")
    if model_type is not None and model_type not in MODEL_TYPES[kind]:
        raise ValueError(
            f"{source}: model_type {model_type!r} is not a {kind} checkpoint (expected {MODEL_TYPES[kind]})"
        )
    if kind == "metaclip":
        cfg = CLIPTextConfig.from_hf(raw, source)
        cfg = cfg.with_positions(max(cfg.max_position_embeddings, max_length))
        model = CLIPTextTransformer(cfg, dtype)
        load_weights(model, path, _clip_name, _resize_positions)
    else:
        cfg = T5Config.from_hf(raw, source)
        model = T5Encoder(cfg, dtype)
        load_weights(model, path, _t5_name)
    model.set_train(False)
    tokenizer = load_tokenizer(kind, path, cfg.vocab_size)
    return TextEncoder(kind, model, tokenizer, max_length)
