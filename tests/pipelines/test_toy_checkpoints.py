"""The README's main command on the committed toy checkpoints (checkpoints/toy, written by scripts/train_toy.sh):
it writes a 17-frame 64x64 video whose shape has the colour the prompt names and moves the way it names."""
from pathlib import Path

import numpy as np
import pytest

from mg.data.toy_world import classify
from mg.data.video_io import probe, read_frames

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("prompt, colour, direction", [("a yellow triangle moving down, 8 fps", "yellow", "down"),
                                                       ("a blue circle moving left, 8 fps", "blue", "left")])
def test_readme_command_follows_the_prompt(inference, tmp_path, monkeypatch, prompt, colour, direction):
    monkeypatch.chdir(ROOT)  # configs/inference/toy.yaml names the checkpoints relative to the repository
    paths = inference.main(["--config", "configs/inference/toy.yaml", "--prompts", prompt,
                            "--output_path", str(tmp_path)])
    info = probe(str(paths[0]))
    assert (info.num_frames, info.height, info.width) == (17, 64, 64)
    read = classify(read_frames(str(paths[0]), np.arange(17)))
    assert (read["colour"], read["direction"]) == (colour, direction)


@pytest.mark.parametrize("given", ["image", "continuation"])
def test_readme_conditioned_command_keeps_what_it_is_given_and_follows_the_prompt(inference, tmp_path, monkeypatch,
                                                                                  given):
    """The committed conditioned model (checkpoints/toy/dit_conditioned, scripts/train_toy_conditioned.sh), given a
    freshly rendered clip of a held-out combination: the first frames come back and the made ones move as asked."""
    import cv2
    from mg.data import toy_world as tw
    from mg.models.tae.media import write_video

    plan = tw.plan_clip(np.random.default_rng(5), "green", "triangle", "right", 64, 64, 17, size=24,
                        jitter=tw.DEFAULT_JITTER)  # a held-out combination, drawn as the training clips are
    clip = tw.render(plan, 64, 64, 17)
    if given == "image":
        cv2.imwrite(str(tmp_path / "first.png"), cv2.cvtColor(clip[0], cv2.COLOR_RGB2BGR))
        options, kept = ["--condition.image", str(tmp_path / "first.png")], np.repeat(clip[:1], 8, axis=0)
    else:
        write_video(str(tmp_path / "clip.mp4"), clip, 8)
        options, kept = ["--condition.video", str(tmp_path / "clip.mp4"), "--condition.frames", "8"], clip[:8]
    monkeypatch.chdir(ROOT)
    paths = inference.main(["--config", "configs/inference/toy.yaml", "--prompts", "a green triangle moving right, 8 fps",
                            "--model.dit_checkpoint", "checkpoints/toy/dit_conditioned.safetensors",
                            "--output_path", str(tmp_path / "out"), *options])
    frames = read_frames(str(paths[0]), np.arange(17))
    error = np.mean((frames[:8].astype(np.float64) - kept.astype(np.float64)) ** 2)
    assert 10 * np.log10(255 ** 2 / error) > 20  # the TAE alone keeps 26-28 dB of such frames
    read = tw.classify(frames[8:])
    assert (tw.classify(frames)["colour"], read["direction"]) == ("green", "right")


@pytest.mark.parametrize("instruction", ["make it blue", "make the background white", "remove the shape"])
def test_readme_edit_command_makes_the_edit_and_keeps_the_motion(inference, tmp_path, monkeypatch, instruction):
    """The committed editing model (checkpoints/toy/dit_edit with tae_edit, scripts/train_toy_edit.sh) edits a freshly
    rendered clip of a held-out combination: the toy classifiers see the edit and the shape keeps its direction."""
    from mg.data import toy_edits as te
    from mg.data import toy_world as tw
    from mg.models.tae.media import write_video

    plan = tw.plan_clip(np.random.default_rng(5), "green", "triangle", "right", 64, 64, 17, size=24,
                        jitter=tw.DEFAULT_JITTER)
    clip = tw.render(plan, 64, 64, 17)
    write_video(str(tmp_path / "clip.mp4"), clip, 8)
    monkeypatch.chdir(ROOT)
    paths = inference.main(["--config", "configs/inference/toy.yaml", "--config", "configs/inference/toy_edit.yaml",
                            "--prompts", instruction, "--edit.video", str(tmp_path / "clip.mp4"),
                            "--output_path", str(tmp_path / "out")])
    verdict = te.judge(te.parse_instruction(instruction), clip, read_frames(str(paths[0]), np.arange(17)))
    assert verdict["success"] and verdict.get("direction_kept", True), verdict


@pytest.mark.parametrize("direction", ["up"])
def test_readme_personalization_command_moves_the_object_as_asked(inference, tmp_path, monkeypatch, direction):
    """The committed personalization model (checkpoints/toy/dit_personalize with tae_subjects,
    scripts/train_toy_personalization.sh), given a reference image of a subject never trained on at a place and size
    of its own: the video shows an object moving the way the prompt says (identity: docs/personalization.md)."""
    import cv2
    from mg.data import toy_subjects as ts
    from mg.data.toy_world import classify_direction

    image = ts.render_reference(ts.Subject.parse(ts.DEFAULT_UNSEEN[0]), (8, 30, 20), 64, 64)[0]
    cv2.imwrite(str(tmp_path / "subject.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    monkeypatch.chdir(ROOT)
    paths = inference.main(["--config", "configs/inference/toy.yaml", "--config",
                            "configs/inference/toy_personalize.yaml", "--prompts",
                            f"the object moving {direction}, 8 fps", "--reference_image", str(tmp_path / "subject.png"),
                            "--output_path", str(tmp_path / "out")])
    frames = read_frames(str(paths[0]), np.arange(17))
    assert paths[0].name.endswith("-subject_seed0.mp4") and ts.placement(frames) is not None
    assert classify_direction(frames) == direction
