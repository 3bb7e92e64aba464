"""Editing (mg.pipelines.given.EditOptions, inference.py --edit.*): the video to edit and the instruction's task reach an
editing transformer; models that cannot edit, unreadable or short videos, unknown tasks and option mixes are refused
before any model loads."""
import functools

import cv2
import numpy as np
import pytest
import yaml

from mg.data.conditions import TASKS
from mg.data.video_io import probe
from mg.models.dit import MovieGenDiT, load_dit, load_dit_weights, save_dit
from mg.pipelines import load_pipeline
from mg.pipelines.given import EditOptions, instruction_task

SAMPLE = dict(num_frames=9, height=16, width=16, fps=8, num_steps=2, jit=False)


def _with(t2v, root, name, **fields):
    """The tiny DiT with conditioning `fields`, its new weights random (so what they read changes the video)."""
    config = t2v.config.__class__(**{**t2v.config.__dict__, **fields})
    model = MovieGenDiT(config)
    load_dit_weights(model, {p.name: p.asnumpy() for p in t2v.get_parameters()}, "t2v")
    rng = np.random.default_rng(0)
    for param in model.trainable_params():
        if param.name.startswith(("condition_embed", "task_embed")):
            param.set_data(type(param)(rng.normal(0, 0.3, param.shape).astype(np.float32)))
    save_dit(model, root / name)
    return root / f"{name}.safetensors"


@pytest.fixture(scope="module")
def models(tiny_checkpoints):
    t2v = load_dit(tiny_checkpoints / "dit.safetensors")
    channels = t2v.config.in_channels + 1
    return {"editing": _with(t2v, tiny_checkpoints, "editing_dit", condition_channels=channels,
                             num_tasks=len(TASKS)),
            "conditioned": _with(t2v, tiny_checkpoints, "conditioned_only_dit", condition_channels=channels)}


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("edit") / "clip.mp4"
    rng = np.random.default_rng(1)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 8, (16, 16))
    for _ in range(9):
        writer.write(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    writer.release()
    return path


def _videos(options, dit, edit, prompts=("make it blue",), **overrides):
    pipe = load_pipeline(**dict(options, dit_checkpoint=str(dit)))
    return pipe(list(prompts), edit=edit, **dict(SAMPLE, guidance_scale=2.0, progress=False, **overrides)).videos


def test_the_video_and_the_task_reach_the_model(model_options, models, clip):
    plain = _videos(model_options, models["editing"], None)  # text only: nothing known, the generation task
    edited = _videos(model_options, models["editing"], EditOptions(video=str(clip)))
    assert edited.shape == plain.shape == (1, 3, 9, 16, 16)
    assert np.abs(edited - plain).max() > 1e-3
    other_task = _videos(model_options, models["editing"], EditOptions(video=str(clip), task="global"))
    assert np.abs(edited - other_task).max() > 1e-3  # "make it blue" reads as local; the task tokens count
    np.testing.assert_array_equal(_videos(model_options, models["editing"], EditOptions(video=str(clip))), edited)
    compiled = _videos(model_options, models["editing"], EditOptions(video=str(clip)), jit=True)
    np.testing.assert_allclose(compiled, edited, atol=1e-4)
    # each instruction of a batch gets its own task: a batch equals its prompts sampled one by one
    batch = _videos(model_options, models["editing"], EditOptions(video=str(clip)),
                    prompts=("make it blue", "remove the shape"), batch_size=2)
    alone = _videos(model_options, models["editing"], EditOptions(video=str(clip)), prompts=("remove the shape",))
    np.testing.assert_allclose(batch[1], alone[0], atol=1e-5)


def test_models_that_cannot_edit_are_refused(model_options, models, clip):
    with pytest.raises(ValueError, match="trained for text-to-video only"):
        _videos(model_options, model_options["dit_checkpoint"], EditOptions(video=str(clip)))
    with pytest.raises(ValueError, match="not trained to edit"):
        _videos(model_options, models["conditioned"], EditOptions(video=str(clip)))


def test_the_task_is_read_from_the_instruction():
    assert [instruction_task(text) for text in ("make it blue", "turn it into a triangle", "Remove the shape",
                                                "add a red square", "make the background white",
                                                "mark the shape in black")] == \
        ["local", "local", "remove", "add", "global", "segment"]
    assert EditOptions(video="v.mp4", task="global").task_of("make it blue") == "global"


@pytest.mark.parametrize("options, message", [
    (["--edit.task", "local"], "applies to --edit.video"),
    (["--edit.video", "{clip}", "--edit.task", "generate"], "--edit.task 'generate': choose one of"),
    (["--edit.video", "{missing}"], r"--edit.video .*missing.mp4: file not found"),
    (["--edit.video", "{clip}", "--sample.num_frames", "17"], "has 9 frames; 17 are needed"),
    (["--edit.video", "{clip}", "--condition.image", "{clip}"], "do not combine it with --condition"),
])
def test_bad_edits_fail_before_loading(inference, model_options, clip, tmp_path, monkeypatch, capsys, options,
                                       message):
    @functools.wraps(inference.load_pipeline)
    def refuse(**_):
        pytest.fail("models loaded despite a bad edit")

    monkeypatch.setattr(inference, "load_pipeline", refuse)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"model": model_options, "sample": SAMPLE}))
    argv = ["--config", str(config), "--prompts", "make it blue", "--output_path", str(tmp_path / "o")]
    argv += [o.format(clip=clip, missing=tmp_path / "missing.mp4") for o in options]
    with pytest.raises(SystemExit):
        inference.main(argv)
    assert message.split(".*")[0] in capsys.readouterr().err


def test_the_cli_writes_an_edited_video(inference, model_options, models, clip, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"model": dict(model_options, dit_checkpoint=str(models["editing"])),
                                      "sample": SAMPLE}))
    paths = inference.main(["--config", str(config), "--prompts", "make it blue", "remove the shape",
                            "--output_path", str(tmp_path / "o"), "--edit.video", str(clip)])
    assert len(paths) == 2 and all(probe(str(p)).num_frames == 9 for p in paths)
