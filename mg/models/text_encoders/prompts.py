"""Prompt conventions of the design: an "FPS-<n>" prefix for UL2/MetaCLIP, visual-text spans only for ByT5."""
import math
import re
from typing import Optional, Union

TEXT_ENCODER_KINDS = ("ul2", "byt5", "metaclip")

# A span is text between double quotes (straight, not preceded by a backslash; or typographic “...”). Inside
# straight quotes \" is a literal quote. Single quotes are not delimiters: they are too often apostrophes.
_SPAN = re.compile(r'(?<!\\)"((?:[^"\\]|\\.)*)"|“([^”]*)”', re.DOTALL)
_ESCAPE = re.compile(r"\\([\"\\])")


def check_kind(kind: str) -> str:
    if kind not in TEXT_ENCODER_KINDS:
        raise ValueError(f"unknown text encoder kind {kind!r}; expected one of {TEXT_ENCODER_KINDS}")
    return kind


def visual_text_spans(caption: str) -> list:
    """The quoted spans of a caption (the text the picture should show), unescaped, empty ones dropped."""
    spans = []
    for match in _SPAN.finditer(caption):
        straight, curly = match.groups()
        text = _ESCAPE.sub(r"\1", straight) if straight is not None else curly
        if text.strip():
            spans.append(text)
    return spans


def prepare_prompt(caption: str, fps: Optional[Union[float, int]], kind: str) -> str:
    """The text encoder input for one caption.

    ul2 / metaclip: "FPS-<n> <caption>" with n the nearest integer (halves round up), the caption alone when fps
    is None. byt5: the visual-text spans joined by a space, "" when there are none (fps is not used).
    """
    check_kind(kind)
    if not isinstance(caption, str):
        raise TypeError(f"caption must be a str, got {type(caption).__name__}")
    if kind == "byt5":
        return " ".join(visual_text_spans(caption))
    if fps is None:
        return caption
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive finite number or None, got {fps!r}")
    return f"FPS-{math.floor(fps + 0.5)} {caption}"
