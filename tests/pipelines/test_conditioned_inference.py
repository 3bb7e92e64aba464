"""Conditioned sampling (mg.pipelines.given, inference.py --condition.*): an image to start from, a video to continue
or to inpaint reach a conditioned transformer through the TAE; a text-to-video transformer, impossible frame counts,
unreadable or short files and option mixes are refused before any model loads."""
import functools

import cv2
import numpy as np
import pytest
import yaml

from mg.data.video_io import probe
from mg.models.dit import MovieGenDiT, load_dit, load_dit_weights, save_dit
from mg.pipelines import load_pipeline
from mg.pipelines.given import GivenOptions, condition_latent


@pytest.fixture(scope="module")
def conditioned(tiny_checkpoints):
    """The tiny DiT with condition channels: random condition weights (so the condition changes the video)."""
    t2v = load_dit(tiny_checkpoints / "dit.safetensors")
    config = t2v.config.__class__(**{**t2v.config.__dict__, "condition_channels": t2v.config.in_channels + 1})
    model = MovieGenDiT(config)
    load_dit_weights(model, {p.name: p.asnumpy() for p in t2v.get_parameters()}, "t2v")
    weight = model.condition_embed.proj.weight
    weight.copy_(type(weight)(np.random.default_rng(0).normal(0, 0.3, weight.shape).astype(np.float32)))
    save_dit(model, tiny_checkpoints / "conditioned_dit")
    return tiny_checkpoints / "conditioned_dit.safetensors"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("given")
    rng = np.random.default_rng(1)
    cv2.imwrite(str(root / "start.png"), rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    mask = np.zeros((16, 16, 3), np.uint8)
    mask[2:6, 2:6] = 255  # one of the 2 x 2 latent cells: the other three are kept
    cv2.imwrite(str(root / "mask.png"), mask)
    writer = cv2.VideoWriter(str(root / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 8, (16, 16))
    for _ in range(9):
        writer.write(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    writer.release()
    return root


SAMPLE = dict(num_frames=9, height=16, width=16, fps=8, num_steps=2, guidance_scale=2.0, jit=False, progress=False)


def _generate(options, dit, given, **overrides):
    pipe = load_pipeline(**dict(options, dit_checkpoint=str(dit)))
    return pipe, pipe(["a red circle"], condition=given, **dict(SAMPLE, **overrides))


def _videos(options, dit, given, **overrides):
    return _generate(options, dit, given, **overrides)[1].videos


@pytest.mark.parametrize("given", [dict(image="start.png"), dict(video="clip.mp4", frames=8),
                                   dict(video="clip.mp4", mask="mask.png")],
                         ids=["image-to-video", "continuation", "inpainting"])
def test_what_is_given_reaches_the_model(model_options, conditioned, files, given):
    given = GivenOptions(**{k: (str(files / v) if isinstance(v, str) else v) for k, v in given.items()})
    plain = _videos(model_options, conditioned, None)
    with_condition = _videos(model_options, conditioned, given)
    assert with_condition.shape == plain.shape == (1, 3, 9, 16, 16)
    assert np.abs(with_condition - plain).max() > 1e-3
    np.testing.assert_array_equal(_videos(model_options, conditioned, given), with_condition)  # deterministic
    compiled = _videos(model_options, conditioned, given, jit=True)
    np.testing.assert_allclose(compiled, with_condition, atol=1e-4)


@pytest.mark.parametrize("given", [dict(image="start.png"), dict(video="clip.mp4", mask="mask.png")],
                         ids=["image-to-video", "inpainting"])
def test_the_given_latent_is_kept_exactly_unless_told_otherwise(model_options, conditioned, files, given):
    """keep (the default) puts the given latent back where the mask knows it and leaves the rest as sampled; keep
    false leaves the model's own rendering of the given part."""
    options = {k: str(files / v) for k, v in given.items()}
    pipe, kept = _generate(model_options, conditioned, GivenOptions(**options))
    _, own = _generate(model_options, conditioned, GivenOptions(**options, keep=False))
    condition = condition_latent(GivenOptions(**options), pipe.tae, 9, 16, 16)
    known = np.broadcast_to(condition[:, -1:], kept.latents.shape) > 0.5
    assert known.any() and not known.all()
    np.testing.assert_allclose(kept.latents[known], np.broadcast_to(condition[:, :-1], known.shape)[known], atol=1e-6)
    np.testing.assert_array_equal(kept.latents[~known], own.latents[~known])
    assert np.abs(own.latents[known] - kept.latents[known]).max() > 1e-2


def test_a_text_to_video_model_is_refused(model_options, files):
    with pytest.raises(ValueError, match="trained for text-to-video only"):
        _videos(model_options, model_options["dit_checkpoint"], GivenOptions(image=str(files / "start.png")))


@pytest.mark.parametrize("given, message", [
    (dict(image="start.png", frames=8), "do not combine it with"),
    (dict(mask="mask.png"), "apply to --condition.video"),
    (dict(video="clip.mp4"), "needs either --condition.frames"),
    (dict(video="clip.mp4", frames=4), "keep a multiple of 8 frames"),
    (dict(video="clip.mp4", frames=8, mask="mask.png"), "needs either --condition.frames"),
    (dict(image="missing.png"), r"--condition.image .*missing.png: file not found"),
])
def test_bad_conditions_fail_before_loading(inference, model_options, files, tmp_path, monkeypatch, given, message):
    @functools.wraps(inference.load_pipeline)
    def refuse(**_):
        pytest.fail("models loaded despite a bad condition")

    monkeypatch.setattr(inference, "load_pipeline", refuse)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"model": model_options, "sample": {
        "num_frames": 9, "height": 16, "width": 16, "fps": 8, "num_steps": 2, "jit": False}}))
    argv = ["--config", str(config), "--prompts", "x", "--output_path", str(tmp_path / "o")]
    for key, value in given.items():
        argv += [f"--condition.{key}", str(files / value) if isinstance(value, str) else str(value)]
    with pytest.raises(SystemExit):
        inference.main(argv)


def test_the_cli_writes_an_image_to_video_sample(inference, model_options, conditioned, files, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"model": dict(model_options, dit_checkpoint=str(conditioned)), "sample": {
        "num_frames": 9, "height": 16, "width": 16, "fps": 8, "num_steps": 2, "jit": False}}))
    paths = inference.main(["--config", str(config), "--prompts", "a red circle", "--output_path",
                            str(tmp_path / "o"), "--condition.image", str(files / "start.png")])
    assert len(paths) == 1 and probe(str(paths[0])).num_frames == 9
