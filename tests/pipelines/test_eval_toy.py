"""tools/eval_toy.py: adherence is read from the pixels (a stand-in pipeline that renders the prompt scores 100%,
one that renders the wrong colour scores 0% colour), and the CLI runs end to end on a tiny model."""
import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from mg.data import toy_world as tw
from mg.pipelines import Generation
from mg.pipelines.outputs import OutputOptions

@pytest.fixture(scope="module")
def eval_toy(load_script):
    return load_script("tools/eval_toy.py")


@pytest.fixture(scope="module")
def toy_csvs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("toy") / "data"
    tw.write_toy_dataset(folder, seed=0, height=32, width=32, num_frames=9, fps=8, videos_per_combo=1,
                         images_per_pair=1, holdout=["red circle left", "yellow square down"])
    return folder / "heldout.csv", folder / "train.csv"


class RenderingPipeline:
    """Renders what the caption asks for (with `colour_map` applied), in model range (B, 3, T, H, W)."""

    def __init__(self, colour_map=None):
        self.colour_map = colour_map or {}

    def generate(self, prompts, seed=0, **options):
        videos = []
        for prompt in prompts:
            colour, shape, _, direction = prompt.split(",")[0].split()[1:5]
            clip = tw.plan_clip(np.random.default_rng(seed), self.colour_map.get(colour, colour), shape, direction,
                                64, 64, 17)
            videos.append(tw.render(clip, 64, 64, 17).transpose(3, 0, 1, 2) / 127.5 - 1.0)
        yield Generation(list(prompts), [seed] * len(prompts), np.stack(videos), None, 8, 0.0)


def test_adherence_counts_matches():
    records = [dict(colour="red", shape="circle", direction="left", pred_colour="red", pred_shape="circle",
                    pred_direction="up"),
               dict(colour="blue", shape="square", direction="up", pred_colour="blue", pred_shape=None,
                    pred_direction="up")]
    assert tw.adherence(records) == {"colour": 1.0, "shape": 0.5, "direction": 0.5, "all": 0.0}


def test_scores_come_from_the_pixels(eval_toy, toy_csvs, tmp_path):
    held, train = toy_csvs
    groups = {"held-out": eval_toy.read_combos(held)[0], "seen": eval_toy.read_combos(train, 5, seed=0)[0]}
    assert len(groups["seen"]) == 5 and set(groups["held-out"]["colour"]) == {"red", "yellow"}
    sample = dict(seed=3, fps=8)
    records = eval_toy.evaluate_model(RenderingPipeline(), groups, sample, 2, tmp_path, OutputOptions(), False)
    assert len(records) == (2 + 5) * 2
    _, rates = eval_toy.report(records)
    assert rates["held-out"] == {"colour": 1.0, "shape": 1.0, "direction": 1.0, "all": 1.0}
    swapped = {"red": "blue", "yellow": "green", "green": "red", "blue": "yellow"}
    records = eval_toy.evaluate_model(RenderingPipeline(swapped), groups, sample, 1, tmp_path, OutputOptions(), True)
    table, rates = eval_toy.report(records)
    assert rates["held-out"]["colour"] == 0.0 and rates["held-out"]["direction"] == 1.0
    assert "| held-out | 2 | 0.0% | 100.0% | 100.0% | 0.0% |" in table
    assert len(list((tmp_path / "videos").glob("*.mp4"))) == 7


def test_cli_end_to_end_on_a_tiny_model(eval_toy, toy_csvs, model_options, tmp_path):
    held, _ = toy_csvs
    argv = ["generate", "--csv", str(held), "--output_path", str(tmp_path), "--num_seeds", "1",
            "--sample.height", "16", "--sample.width", "16", "--sample.num_frames", "9", "--sample.fps", "8",
            "--sample.num_steps", "2", "--sample.batch_size", "2", "--sample.jit", "false"]
    for key, value in model_options.items():
        argv += [f"--model.{key}", json.dumps(value) if isinstance(value, dict) else value]
    rates = eval_toy.main(argv)
    saved = json.loads((tmp_path / "eval_toy.json").read_text())
    assert saved["rates"] == rates and len(saved["records"]) == 2
    assert {(r["colour"], r["shape"], r["direction"]) for r in saved["records"]} == \
        {("red", "circle", "left"), ("yellow", "square", "down")}
    assert (tmp_path / "eval_toy.md").read_text().startswith("| group | videos |")
    plain = tmp_path / "plain.csv"
    plain.write_text("video,caption\na.mp4,a cat\n")
    with pytest.raises(ValueError, match="not a toy-world CSV"):
        eval_toy.read_combos(plain)


def test_tae_benchmark_reads_the_reconstruction_half(load_script, toy_csvs, tmp_path):
    """benchmark_tae_psnr.py classifies the right half (the reconstruction) of each side-by-side sample: a sample
    whose right half shows the clip scores 100%; one whose right half is another colour misses exactly that."""
    bench = load_script("tools/benchmark_tae_psnr.py")
    heldout = toy_csvs[0]
    table = pd.read_csv(heldout, dtype=str, keep_default_na=False)
    for index, row in table.iterrows():
        clip = tw.plan_clip(np.random.default_rng(index), "blue" if index == 0 else row["colour"], row["shape"],
                            row["direction"], 32, 32, 9)
        wrong = tw.render(tw.ToyClip("green", "square", None, 8, 2, 2, 0), 32, 32, 9)  # the "input" half
        tw.write_video(tmp_path / f"{index:03d}_{Path(row['video']).stem}.mp4",
                       np.concatenate([wrong, tw.render(clip, 32, 32, 9)], axis=2), 8)
    rates = bench.reconstruction_adherence(heldout, tmp_path)
    assert rates == {"colour": 0.5, "shape": 1.0, "direction": 1.0, "all": 0.5}


class ContinuingPipeline(RenderingPipeline):
    """Renders the prompt's clip but keeps what it is given in its first frames, like a perfect conditioned model."""

    class tae:  # what eval_toy reads of the TAE: latent frames are made of 8 frames
        class config:
            temporal_compression = 8

    def generate(self, prompts, seed=0, condition=None, **options):
        (result,) = super().generate(prompts, seed, **options)
        if condition.image is not None:
            given = np.repeat(tw_read(condition.image, [0]), 8, axis=0)
        else:
            given = tw_read(condition.video, np.arange(condition.frames))
        result.videos[0][:, :len(given)] = given.transpose(3, 0, 1, 2) / 127.5 - 1.0
        yield result


def tw_read(path, indices):
    from mg.data.video_io import read_frames
    return read_frames(path, indices)


@pytest.mark.parametrize("given", ["image", "continuation"])
def test_given_frames_are_measured_and_direction_comes_from_the_made_ones(eval_toy, tmp_path, given):
    folder = tmp_path / "data"
    tw.write_toy_dataset(folder, seed=0, height=64, width=64, num_frames=17, fps=8, videos_per_combo=1,
                         images_per_pair=1, holdout=["red circle left", "blue square up"])
    groups = {"held-out": eval_toy.read_combos(folder / "heldout.csv")[0]}
    records = eval_toy.evaluate_model(ContinuingPipeline(), groups, dict(seed=0, fps=8), 1, tmp_path / "out",
                                      OutputOptions(), False, given)
    assert len(records) == 2 and all(r["given_psnr"] > 40 for r in records)  # kept exactly (up to mp4 coding)
    table, rates = eval_toy.report(records)
    assert rates["held-out"]["direction"] == 1.0 and "given frames PSNR" in table


def test_keep_given_false_asks_for_the_models_own_rendering(eval_toy, tmp_path, monkeypatch):
    folder = tmp_path / "data"
    tw.write_toy_dataset(folder, seed=0, height=64, width=64, num_frames=17, fps=8, videos_per_combo=1,
                         images_per_pair=1, holdout=["red circle left"])
    groups = {"held-out": eval_toy.read_combos(folder / "heldout.csv")[0]}
    asked = []
    original = ContinuingPipeline.generate
    monkeypatch.setattr(ContinuingPipeline, "generate",
                        lambda self, prompts, **kw: asked.append(kw["condition"].keep) or original(self, prompts, **kw))
    for keep in (True, False):
        eval_toy.evaluate_model(ContinuingPipeline(), groups, dict(seed=0, fps=8), 1, tmp_path / f"out{keep}",
                                OutputOptions(), False, "image", keep_given=keep)
    assert asked == [True, False]


@pytest.fixture(scope="module")
def eval_quality(load_script):
    return load_script("tools/eval_toy_quality.py")


class BlurringPipeline(RenderingPipeline):
    """Renders the caption, then blurs every frame (sigma 2 px): a model whose edges are soft."""

    def generate(self, prompts, seed=0, **options):
        for result in super().generate(prompts, seed, **options):
            frames = ((result.videos.transpose(0, 2, 3, 4, 1) + 1) * 127.5).astype(np.uint8)
            soft = np.stack([[cv2.GaussianBlur(f, (0, 0), 2.0) for f in video] for video in frames])
            yield dataclasses.replace(result, videos=soft.transpose(0, 4, 1, 2, 3) / 127.5 - 1.0)


def test_quality_is_read_from_the_pixels_against_clean_renders(eval_quality, toy_csvs):
    held, train = toy_csvs
    groups = {"held-out": tw.read_combos(held)[0], "seen": tw.read_combos(train, 4, seed=0)[0]}
    sample = dict(seed=0, fps=8)
    records = eval_quality.generated(RenderingPipeline(), "crisp", groups, sample, 2)
    records += eval_quality.generated(BlurringPipeline(), "soft", groups, sample, 2)
    for group, row, frames in eval_quality.clean_renders(groups, 2):
        records.append(eval_quality.measure(frames, row, eval_quality.CLEAN, group))
    assert len(records) == 3 * (2 + 4) * 2
    table, rows = eval_quality.report(records)
    crisp, soft = rows["crisp / held-out"], rows["soft / held-out"]
    assert crisp["edge_sharpness"] > 3 * soft["edge_sharpness"]
    assert crisp["squares_by_corners"] == 1.0 and crisp["shapes_by_corners"] == 1.0
    assert crisp["background_spread"] == 0.0 and crisp["colour_drift"] == 0.0 and crisp["direction"] == 1.0
    assert soft["colour"] == 1.0  # blur softens the edges, not the colour
    assert "| crisp | held-out | 4 |" in table and "| clean renders | seen | 8 |" in table


def test_quality_cli_refuses_a_missing_checkpoint(eval_quality, toy_csvs, tmp_path, capsys):
    held, _ = toy_csvs
    with pytest.raises(SystemExit):
        eval_quality.main(["--csv", str(held), "--models", json.dumps({"gone": str(tmp_path / "nothing")}),
                           "--model.dit_checkpoint", "unused", "--model.tae_checkpoint", "unused",
                           "--output_path", str(tmp_path)])
    assert "--models.gone" in capsys.readouterr().err
