"""Personalized sampling (inference.py --reference_image): each reference image makes its own video of each prompt,
the image reaches the model (eagerly and compiled), files are named by prompt and image; an unreadable image is
refused before any model loads and a model without a reference tower is refused."""
import functools

import cv2
import numpy as np
import pytest
import yaml

from mg.models.clip_vision import CLIPVisionConfig
from mg.models.dit import MovieGenDiT, load_dit, load_dit_weights, save_dit
from mg.pipelines import load_pipeline

TOWER = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         image_size=16, patch_size=8)
SAMPLE = dict(num_frames=9, height=16, width=16, fps=8, num_steps=2, guidance_scale=2.0, jit=False)


@pytest.fixture(scope="module")
def personal(tiny_checkpoints):
    """The tiny DiT with a reference tower, every new weight random (so the image changes the video)."""
    t2v = load_dit(tiny_checkpoints / "dit.safetensors")
    config = t2v.config.__class__(**{**t2v.config.__dict__, "reference_encoder": TOWER.to_dict()})
    model = MovieGenDiT(config)
    rng = np.random.default_rng(0)
    weights = {p.name: p.asnumpy() for p in t2v.get_parameters()}
    weights.update({p.name: rng.normal(0, 0.3, p.shape).astype(np.float32) for p in model.get_parameters()
                    if p.name.startswith("reference_")})
    load_dit_weights(model, weights)
    save_dit(model, tiny_checkpoints / "personal_dit")
    return tiny_checkpoints / "personal_dit.safetensors"


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    root = tmp_path_factory.mktemp("references")
    for name, value in (("dark", 30), ("bright", 220)):
        cv2.imwrite(str(root / f"{name}.png"), np.full((20, 24, 3), value, np.uint8))
    return [str(root / "dark.png"), str(root / "bright.png")]


def test_each_reference_makes_its_own_video_and_reaches_the_model(model_options, personal, references):
    pipe = load_pipeline(**dict(model_options, dit_checkpoint=str(personal)))
    both = pipe(["a red circle"], reference_images=references, progress=False, **SAMPLE)
    assert both.videos.shape == (2, 3, 9, 16, 16) and both.references == references
    dark = pipe(["a red circle"], reference_images=references[:1], progress=False, **SAMPLE)
    np.testing.assert_allclose(dark.videos[0], both.videos[0], atol=1e-5)  # batching changes nothing
    assert np.abs(both.videos[0] - both.videos[1]).max() > 1e-3
    plain = pipe(["a red circle"], progress=False, **SAMPLE)
    assert np.abs(plain.videos[0] - both.videos[0]).max() > 1e-3
    compiled = pipe(["a red circle"], reference_images=references, progress=False, **dict(SAMPLE, jit=True))
    np.testing.assert_allclose(compiled.videos, both.videos, atol=1e-4)


def test_a_model_without_a_tower_is_refused(model_options, references):
    pipe = load_pipeline(**model_options)
    with pytest.raises(ValueError, match="no reference tower"):
        pipe(["a red circle"], reference_images=references, progress=False, **SAMPLE)


def test_the_cli_names_files_by_image_and_refuses_unreadable_ones(inference, model_options, personal, references,
                                                                  tmp_path, monkeypatch):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"model": dict(model_options, dit_checkpoint=str(personal)),
                                      "sample": dict(SAMPLE, num_steps=1)}))
    paths = inference.main(["--config", str(config), "--prompts", "a red circle", "--output_path",
                            str(tmp_path / "o"), "--reference_image", *references])
    assert sorted(p.name for p in paths) == ["a-red-circle-bright_seed0.mp4", "a-red-circle-dark_seed0.mp4"]

    @functools.wraps(inference.load_pipeline)
    def refuse(**_):
        pytest.fail("models loaded despite an unreadable reference image")

    monkeypatch.setattr(inference, "load_pipeline", refuse)
    with pytest.raises(SystemExit):
        inference.main(["--config", str(config), "--prompts", "x", "--output_path", str(tmp_path / "p"),
                        "--reference_image", str(tmp_path / "missing.png")])


@pytest.mark.slow
def test_the_evaluation_tool_measures_each_model_and_the_tae_ceiling(load_script, model_options, personal, tmp_path):
    from mg.data.toy_subjects import write_subject_dataset

    write_subject_dataset(tmp_path / "data", num_frames=9, videos_per_subject=1, images_per_subject=0,
                          unseen=("halves-red-blue", "checks-yellow-red"))
    tool = load_script("tools/eval_toy_personalization.py")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"model": model_options, "sample": dict(SAMPLE, height=64, width=64,
                                                                             num_steps=1, batch_size=4)}))
    rates = tool.main(["--config", str(config), "--csv", str(tmp_path / "data" / "heldout.csv"), "--models",
                       f"{{a: {personal}}}", "--tae_ceiling", "true", "--output_path", str(tmp_path / "eval")])
    assert list(rates) == ["a", "held-out clips through the TAE"]
    assert rates["a"]["videos"] == 8 and all(0 <= rates["a"][m] <= 1 for m in tool.MEASURES)
    # the clips' own first frames are cross-paired: the judge must not call them copies
    assert rates["held-out clips through the TAE"]["copies"] == 0
    assert (tmp_path / "eval" / "eval_toy_personalization.md").is_file()
