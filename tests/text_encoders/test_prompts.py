"""Prompt conventions: FPS prefix for UL2/MetaCLIP, visual-text spans for ByT5."""
import pytest

from mg.models.text_encoders import TEXT_ENCODER_KINDS, prepare_prompt, visual_text_spans


def test_kinds():
    assert TEXT_ENCODER_KINDS == ("ul2", "byt5", "metaclip")


@pytest.mark.parametrize("kind", ["ul2", "metaclip"])
@pytest.mark.parametrize("fps,prefix", [(16, "FPS-16 "), (24.0, "FPS-24 "), (23.976, "FPS-24 "), (29.97, "FPS-30 "),
                                        (12.5, "FPS-13 "), (None, "")])
def test_fps_prefix(kind, fps, prefix):
    assert prepare_prompt('a sign that says "OPEN"', fps, kind) == prefix + 'a sign that says "OPEN"'


@pytest.mark.parametrize("fps", [0, -8, float("nan"), float("inf"), "16", True])
def test_bad_fps_is_rejected(fps):
    with pytest.raises(ValueError, match="fps"):
        prepare_prompt("a cat", fps, "ul2")


@pytest.mark.parametrize(
    "caption,expected",
    [
        ("a cat sleeping on a sofa", ""),  # no spans
        ('a neon sign that says "OPEN 24/7" above a door', "OPEN 24/7"),
        ('a poster reading "SALE" next to a mug printed "I \\"love\\" tea"', 'SALE I "love" tea'),  # multiple, escaped
        ("a banner “Happy Birthday” and the cat's toy", "Happy Birthday"),  # typographic quotes; apostrophe ignored
        ('an escaped \\"not a span\\" and "real"', "real"),
        ('an empty "" span and an unterminated "quote', ""),
    ],
)
def test_byt5_gets_only_visual_text(caption, expected):
    assert prepare_prompt(caption, fps=16, kind="byt5") == expected


def test_spans_keep_order_and_inner_spaces():
    assert visual_text_spans('"B  b" then "A"') == ["B  b", "A"]


def test_unknown_kind_and_non_string():
    with pytest.raises(ValueError, match="unknown text encoder kind 'clip'"):
        prepare_prompt("a cat", 16, "clip")
    with pytest.raises(TypeError, match="caption"):
        prepare_prompt(None, 16, "ul2")
