"""Output naming and writing, prompt files, and that the shipped inference configs bind to the CLI."""
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from mg.data.video_io import read_frames
from mg.pipelines import save_video, slugify
from mg.pipelines.prompt_files import read_prompts

ROOT = Path(__file__).resolve().parents[2]


def test_slugify():
    assert slugify('A "Red" circle, moving LEFT!  8 fps') == "a-red-circle-moving-left-8-fps"
    assert slugify("!!!") == "empty-prompt"
    assert len(slugify("word " * 40)) <= 60 and not slugify("word " * 40).endswith("-")


def test_save_video_names_never_overwrite(tmp_path):
    rng = np.random.default_rng(0)
    video = rng.uniform(-1, 1, (3, 4, 16, 16)).astype(np.float32)
    first = save_video(tmp_path, "a cat", 3, video, 8, ["mp4"], latent=np.ones((16, 1, 2, 2)))
    assert [p.name for p in first] == ["a-cat_seed3.mp4", "a-cat_seed3.latent.safetensors"]
    content = first[0].read_bytes()
    second = save_video(tmp_path, "a cat", 3, -video, 8, ["mp4"])
    assert [p.name for p in second] == ["a-cat_seed3-1.mp4"] and first[0].read_bytes() == content
    # A name is taken if any of its files exists (here only the latent of a later stem).
    (tmp_path / "a-cat_seed3-2.latent.safetensors").write_bytes(b"")
    assert [p.name for p in save_video(tmp_path, "a cat", 3, video, 8, ["mp4"])] == ["a-cat_seed3-3.mp4"]
    replaced = save_video(tmp_path, "a cat", 3, -video, 8, ["mp4"], overwrite=True)
    assert replaced[0].name == "a-cat_seed3.mp4" and replaced[0].read_bytes() != content
    expected = np.clip(np.round((video.transpose(1, 2, 3, 0) + 1) * 127.5), 0, 255)
    frames = read_frames(str(first[0].parent / "a-cat_seed3-1.mp4"), np.arange(4))
    assert frames.shape == (4, 16, 16, 3)
    with safe_open(str(first[1]), framework="numpy") as f:
        assert f.metadata()["prompt"] == "a cat" and f.get_tensor("latent").shape == (16, 1, 2, 2)
    png = save_video(tmp_path, "a dog", 0, video[:, :1], 8, ["mp4", "gif"])
    assert [p.name for p in png] == ["a-dog_seed0.png"]
    np.testing.assert_array_equal(read_frames(str(png[0]), [0])[0], expected[0])
    with pytest.raises(ValueError, match="unknown output format"):
        save_video(tmp_path, "a cat", 0, video, 8, ["webm"])


def test_read_prompts(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("# header\na red circle\n\n  a blue square  \n")
    assert read_prompts(txt) == ["a red circle", "a blue square"]
    csv = tmp_path / "p.csv"
    csv.write_text('video,caption\na.mp4,"a cat, sleeping"\nb.mp4,\n')
    assert read_prompts(csv) == ["a cat, sleeping"]
    bad = tmp_path / "bad.csv"
    bad.write_text("video,text\na.mp4,x\n")
    with pytest.raises(ValueError, match=r"bad.csv: needs a column named one of \('caption', 'prompt'\)"):
        read_prompts(bad)
    with pytest.raises(FileNotFoundError, match="prompts file not found"):
        read_prompts(tmp_path / "none.txt")
    with pytest.raises(ValueError, match="must end in .txt or .csv"):
        read_prompts(bad.rename(tmp_path / "p.json"))


@pytest.mark.parametrize("name", ["toy.yaml", "moviegen_256px.yaml"])
def test_shipped_configs_bind_to_the_cli(inference, name):
    config = str(ROOT / "configs" / "inference" / name)
    cfg = inference.build_parser().parse_args(["--config", config, "--prompts", "x"])
    assert cfg.model.dit_checkpoint.endswith("dit.safetensors") and cfg.sample.num_steps == 50
    assert cfg.sample.schedule == "linear_quadratic" and cfg.sample.guidance_scale == 7.5


def test_toy_config_lengths_hold_every_toy_caption():
    """No toy caption is truncated by the tiny (character / byte level) tokenizers at toy.yaml's lengths."""
    import yaml

    from mg.data import toy_world as tw
    from mg.models.text_encoders import prepare_prompt
    from mg.models.text_encoders.tiny import tiny_clip_tokenizer, tiny_t5_tokenizer

    lengths = yaml.safe_load((ROOT / "configs" / "inference" / "toy.yaml").read_text())["model"]["text_max_lengths"]
    captions = [tw.caption(c, s, d, 8) for c, s, d in tw.all_combos()]
    for kind, tokenizer in (("ul2", tiny_t5_tokenizer()), ("metaclip", tiny_clip_tokenizer())):
        longest = max(len(tokenizer(prepare_prompt(c, 8, kind))["input_ids"]) for c in captions)
        assert longest <= lengths[kind], (kind, longest)
