"""The toy world's editing vocabulary and judge: every edit is read back from its render and not from the unedited
video, inverses undo their edits, and the preservation measures see a moved path and a changed background."""
import numpy as np
import pytest

from mg.data import toy_edits as te
from mg.data.conditions import TASKS
from mg.data.toy_world import plan_clip

H = W = 64
FRAMES = 17


def _scene(colour="red", shape="circle", direction="left", seed=0, **scene):
    clip = plan_clip(np.random.default_rng(seed), colour, shape, direction, H, W, FRAMES, size=24, jitter=6)
    return te.Scene(clip, **scene)


def _render(scene):
    return te.render_scene(scene, H, W, FRAMES)


EDITS = [te.ToyEdit("colour", "blue"), te.ToyEdit("shape", "square"), te.ToyEdit("shape", "triangle"),
         te.ToyEdit("background", "white"), te.ToyEdit("remove"), te.ToyEdit("add")]


@pytest.mark.parametrize("edit", EDITS, ids=lambda e: e.instruction)
@pytest.mark.parametrize("direction", ["left", "up"])
def test_a_rendered_edit_succeeds_keeps_what_it_must_and_the_unedited_video_fails(edit, direction):
    scene = _scene(direction=direction)
    source, edited = _render(scene), _render(edit.apply(scene))
    verdict = te.judge(edit, source, edited)
    assert verdict["success"]
    assert verdict.get("direction_kept", True)
    assert verdict.get("path_error_px", 0.0) <= 0.5  # bounding-box centres: a new shape keeps the place
    assert verdict.get("background_change", 0.0) == 0.0
    assert not te.judge(edit, source, source)["success"]
    assert edit.task in TASKS


def test_undoing_edits_and_segmentation():
    plain, white, added = _scene(), _scene(background="white"), _scene(added=True)
    for scene, edit in [(plain, te.ToyEdit("colour", "green")), (plain, te.ToyEdit("shape", "square")),
                        (plain, te.ToyEdit("background", "white")), (plain, te.ToyEdit("add")),
                        (white, te.ToyEdit("background", "grey")), (added, te.ToyEdit("remove_added"))]:
        undo = edit.inverse(scene)
        assert undo.apply(edit.apply(scene)) == scene
        assert te.judge(undo, _render(edit.apply(scene)), _render(scene))["success"]
    assert te.ToyEdit("remove").inverse(plain) is None
    source = _render(plain)
    assert te.judge(te.ToyEdit("mark"), source, te.mark(source))["success"]
    assert not te.judge(te.ToyEdit("mark"), source, source)["success"]


def test_preservation_sees_a_moved_path_a_lost_direction_and_a_changed_background():
    scene, edit = _scene(), te.ToyEdit("colour", "blue")
    source, edited = _render(scene), _render(edit.apply(scene))
    shifted = np.roll(edited, 5, axis=2)  # 5 px to the right in every frame
    assert te.judge(edit, source, shifted)["path_error_px"] == pytest.approx(5.0)
    frozen = np.repeat(edited[:1], FRAMES, axis=0)  # the object no longer moves
    assert not te.judge(edit, source, frozen)["direction_kept"]
    noisy = edited.copy()
    noisy[:, 40:, 40:] = 200  # a patch away from the object's path (bottom-right)
    assert te.judge(edit, source, noisy)["background_change"] > 5


def test_instructions_round_trip_and_nonsense_is_refused():
    for edit in EDITS + [te.ToyEdit("remove_added"), te.ToyEdit("mark")]:
        assert te.parse_instruction(edit.instruction) == edit
    with pytest.raises(ValueError, match="not a toy edit instruction"):
        te.parse_instruction("make it purple")
    with pytest.raises(ValueError, match="no toy edit"):
        te.ToyEdit("colour", "purple")
    with pytest.raises(ValueError, match="does not change"):
        te.ToyEdit("colour", "red").apply(_scene(colour="red"))


def test_measured_edits_ask_for_something_the_video_does_not_show():
    for colour in ("red", "yellow"):
        for shape in ("circle", "triangle"):
            scene = _scene(colour=colour, shape=shape)
            edits = te.measured_edits(colour, shape)
            assert [e.kind for e in edits] == list(te.MEASURED_KINDS)
            assert all(e.applies_to(scene) for e in edits)
