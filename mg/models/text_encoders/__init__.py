"""Frozen text encoders of the design: UL2 and ByT5 (T5 encoder) and long-prompt MetaCLIP (CLIP text transformer).

    from mg.models.text_encoders import build_text_encoder, prepare_prompt, TEXT_ENCODER_KINDS
    enc = build_text_encoder("ul2", "/path/to/ul2", max_length=256)
    emb, mask = enc.encode([prepare_prompt("a cat", fps=16, kind="ul2")])
"""
from .clip import CLIPTextConfig, CLIPTextTransformer
from .encoder import TextEncoder, build_text_encoder
from .prompts import TEXT_ENCODER_KINDS, prepare_prompt, visual_text_spans
from .t5 import T5Config, T5Encoder

__all__ = [
    "TEXT_ENCODER_KINDS",
    "build_text_encoder",
    "prepare_prompt",
    "visual_text_spans",
    "TextEncoder",
    "T5Config",
    "T5Encoder",
    "CLIPTextConfig",
    "CLIPTextTransformer",
]
