"""inference.py: options from YAML and the command line reach the pipeline, files are named after prompt and seed
and never overwritten, the same seed gives the same video, frames=1 gives an image, bad options fail clearly."""
import functools
import warnings

import numpy as np
import pytest
import yaml

from mg.data.video_io import probe, read_frames
from mg.pipelines import MovieGenPipeline

@pytest.fixture
def config(tmp_path, model_options):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({"model": model_options, "sample": {
        "num_frames": 9, "height": 16, "width": 16, "fps": 8, "num_steps": 2, "guidance_scale": 2.0, "jit": False}}))
    return str(path)


@pytest.fixture
def spy(monkeypatch):
    """Records the options MovieGenPipeline.generate receives (and still runs it)."""
    calls = []
    original = MovieGenPipeline.generate

    @functools.wraps(original)  # keeps the signature the CLI is built from
    def generate(self, prompts, **options):
        calls.append(dict(options, prompts=list(prompts)))
        return original(self, prompts, **options)

    monkeypatch.setattr(MovieGenPipeline, "generate", generate)
    return calls


def test_cli_options_reach_the_pipeline_and_files_are_named(inference, config, tmp_path, spy):
    out = tmp_path / "out"
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("# toy prompts\na blue square moving up\n\n")
    argv = ["--config", config, "--prompts", "A red circle, moving left!", "--prompts_file", str(prompts_file),
            "--output_path", str(out), "--sample.seed", "7", "--sample.schedule", "linear",
            "--sample.negative_prompt", "blurry", "--sample.batch_size", "2", "--sample.width", "32"]
    paths = inference.main(argv)
    options = spy[-1]
    assert options["prompts"] == ["A red circle, moving left!", "a blue square moving up"]
    assert (options["seed"], options["schedule"], options["negative_prompt"], options["batch_size"]) == \
        (7, "linear", "blurry", 2)
    assert (options["num_steps"], options["guidance_scale"], options["num_frames"]) == (2, 2.0, 9)
    assert [p.name for p in paths] == ["a-red-circle-moving-left_seed7.mp4", "a-blue-square-moving-up_seed7.mp4"]
    info = probe(str(paths[0]))
    assert (info.num_frames, info.height, info.width, info.fps) == (9, 16, 32, 8.0)
    saved = yaml.safe_load((out / "inference_config.yaml").read_text())
    assert saved["sample"]["seed"] == 7 and saved["sample"]["width"] == 32
    assert "s/video" in (out / "inference.log").read_text()

    # The first prompt again: a new numbered file, the old one untouched, the same frames (same seed).
    before = paths[0].read_bytes()
    again = inference.main(argv[:4] + argv[6:])
    assert [p.name for p in again] == ["a-red-circle-moving-left_seed7-1.mp4"]
    assert paths[0].read_bytes() == before and (out / "inference_config-1.yaml").is_file()
    np.testing.assert_array_equal(read_frames(str(paths[0]), np.arange(9)), read_frames(str(again[0]), np.arange(9)))


def test_cli_image_gif_and_latents(inference, config, tmp_path):
    out = tmp_path / "out"
    paths = inference.main(["--config", config, "--prompts", "a yellow triangle", "--output_path", str(out),
                            "--sample.num_frames", "1", "--sample.height", "null", "--sample.width", "null",
                            "--sample.aspect_ratio", "2:1", "--sample.resolution", "16",
                            "--output.save_latents", "true"])
    assert [p.name for p in paths] == ["a-yellow-triangle_seed0.png", "a-yellow-triangle_seed0.latent.safetensors"]
    info = probe(str(paths[0]))
    assert (info.num_frames, info.height, info.width) == (1, 16, 32)

    paths = inference.main(["--config", config, "--prompts", "a green circle", "--output_path", str(out),
                            "--output.formats", "[gif, png]", "--sample.guidance_scale", "1.0"])
    from PIL import Image, ImageSequence

    with Image.open(paths[0]) as gif:  # PIL merges repeated frames into longer ones: count time, not frames
        durations = [frame.info["duration"] for frame in ImageSequence.Iterator(gif)]
    assert sum(durations) == pytest.approx(9 * 125, abs=10)  # GIF stores centiseconds
    assert paths[1].is_dir() and len(list(paths[1].glob("*.png"))) == 9


@pytest.mark.parametrize("override, message", [
    (["--sample.schedule", "cosine"], "unknown schedule 'cosine'"),
    (["--sample.num_steps", "-5"], "num_steps must be a positive integer"),
    (["--output.formats", "[avi]"], "unknown output format"),
])
def test_cli_bad_options_fail_before_loading(inference, config, tmp_path, override, message, monkeypatch):
    @functools.wraps(inference.load_pipeline)
    def refuse(**_):
        pytest.fail("models loaded despite a bad option")

    monkeypatch.setattr(inference, "load_pipeline", refuse)
    with pytest.raises(ValueError, match=message):
        inference.main(["--config", config, "--prompts", "x", "--output_path", str(tmp_path / "o")] + override)


def test_cli_missing_checkpoint_and_prompts(inference, config, tmp_path, capsys):
    with pytest.raises(Exception, match="nowhere/dit"):
        inference.main(["--config", config, "--prompts", "x", "--output_path", str(tmp_path / "o"),
                        "--model.dit_checkpoint", str(tmp_path / "nowhere" / "dit.safetensors")])
    with pytest.raises(SystemExit):
        inference.main(["--config", config, "--output_path", str(tmp_path / "o")])
    assert "give --prompts" in capsys.readouterr().err


def test_a_run_uses_no_deprecated_jsonargparse_option(inference, config, tmp_path, monkeypatch):
    monkeypatch.setenv("JSONARGPARSE_DEPRECATION_WARNINGS", "all")  # every call warns, not only the first of a kind
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        inference.main(["--config", config, "--prompts", "a red circle", "--output_path", str(tmp_path / "out")])
    assert [str(w.message) for w in caught if "Jsonargparse" in type(w.message).__name__] == []
