"""tools/train_tae.py (train, checkpoint, resume, export, bad options) with its batches (mg.training.tae_step), and
tools/eval_tae.py (metrics table, comparisons)."""
import csv
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from mg.io import load_checkpoint
from mg.models.tae import TemporalAutoencoder, load_tae, save_tae, tae_config
from mg.training.tae_step import TAEBatches

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def _run(tool, *args, ok=True):
    result = subprocess.run([sys.executable, str(TOOLS / tool), *args], capture_output=True, text=True, timeout=600)
    if ok:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_train_tae_saves_resumes_and_exports(tmp_path):
    out = tmp_path / "run"
    common = ["--model.preset", "tiny", "--data.synthetic", "true", "--data.height", "16", "--data.width", "16",
              "--data.frames", "8", "--data.video_batch_size", "1", "--data.image_batch_size", "2",
              "--data.image_every", "2", "--loss.disc_weight", "0.1", "--loss.disc_start", "1",
              "--loss.disc_channels", "8", "--loss.disc_layers", "2", "--train.output_path", str(out),
              "--train.save.every", "1", "--train.log.every", "1", "--env.mode", "1", "--train.ema.decay", "0.9"]
    _run("train_tae.py", *common, "--train.steps", "2")
    checkpoints = sorted((out / "ckpt").glob("*.safetensors"))
    assert [p.name for p in checkpoints] == ["step_000000001.safetensors", "step_000000002.safetensors"]
    tensors, metadata = load_checkpoint(checkpoints[-1])
    assert {key.split("/")[0] for key in tensors} == {"model", "optimizer", "ema", "disc", "disc_optimizer"}
    assert metadata["step"] == 2 and metadata["tae_config"]["base_channels"] == 8
    assert (out / "config.yaml").is_file() and (out / "loss_curve.png").stat().st_size > 0
    # a finished run is not overwritten; resuming it needs a new length and no exported model
    assert "has finished" in _run("train_tae.py", *common, "--train.steps", "3", ok=False).stderr
    (out / "tae.safetensors").unlink()
    (out / "tae.json").unlink()
    _run("train_tae.py", *common, "--train.steps", "3", "--train.resume", "latest")
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert {"loss", "l1", "kl", "lr", "g_adv"} <= set(records[1]) and "d_loss" in records[1]
    tae = load_tae(out / "tae.safetensors")
    assert replace(tae.config, scaling_factor=1.0, shift_factor=0.0) == tae_config("tiny")
    assert tae.config.scaling_factor != 1.0 and tae.config.shift_factor != 0.0  # fitted at the end of training


@pytest.mark.parametrize("bad, words", [
    (["--train.save.every", "0"], ["train.save.every", ">= 1"]),
    (["--model.dtype", "fp16"], ["model.dtype", "fp16"]),
    (["--train.settings.gradient_accumulation_steps", "2"], ["gradient_accumulation_steps"]),
    (["--data.crop_size", "12"], ["data.crop_size"]),
    (["--model.trainable", "decoder"], ["model.trainable", "model.init_from"]),
], ids=["save-every-0", "dtype", "accumulation", "crop-size", "decoder-from-nothing"])
def test_train_tae_refuses_bad_values_before_building_anything(train_tae, tmp_path, capsys, monkeypatch, bad, words):
    def no_model(*_):
        raise AssertionError("a model was built")
    monkeypatch.setattr(train_tae, "build_tae", no_model)
    args = ["--model.preset", "tiny", "--data.synthetic", "true", "--data.height", "16", "--data.width", "16",
            "--train.output_path", str(tmp_path / "run"), *bad]
    with pytest.raises(SystemExit):
        train_tae.main(args)
    message = capsys.readouterr().err
    assert all(word in message for word in words), message


@pytest.mark.slow
def test_eval_tae_writes_table_and_comparisons(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    writer = cv2.VideoWriter(str(folder / "a.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 8, (16, 16))
    for t in range(9):
        writer.write(np.full((16, 16, 3), 20 * t, np.uint8))
    writer.release()
    cv2.imwrite(str(folder / "b.png"), np.full((16, 24, 3), 128, np.uint8))
    save_tae(TemporalAutoencoder(tae_config("tiny")), tmp_path / "tae.safetensors")
    _run("eval_tae.py", "--tae_checkpoint", str(tmp_path / "tae.safetensors"), "--videos", str(folder),
         "--output_dir", str(tmp_path / "eval"))
    rows = list(csv.DictReader(open(tmp_path / "eval" / "metrics.csv")))
    assert [r["video"] for r in rows] == [str(folder / "a.mp4"), str(folder / "b.png"), "MEAN"]
    assert [r["frames"] for r in rows] == ["9", "1", "10"]
    mean_psnr = float(rows[2]["psnr"])
    assert mean_psnr == pytest.approx((float(rows[0]["psnr"]) + float(rows[1]["psnr"])) / 2)
    assert sorted(p.name for p in (tmp_path / "eval" / "samples").iterdir()) == ["000_a.mp4", "001_b.png"]
    assert cv2.imread(str(tmp_path / "eval" / "samples" / "001_b.png")).shape == (16, 48, 3)  # input | recon


def test_a_decoder_fine_tune_keeps_the_encoder_and_the_latent_scale(train_tae, tmp_path):
    start = TemporalAutoencoder(tae_config("tiny", scaling_factor=0.7, shift_factor=0.2))
    save_tae(start, tmp_path / "start")
    train_tae.main(["--model.preset", "tiny", "--model.init_from", str(tmp_path / "start.safetensors"),
                    "--model.trainable", "decoder", "--data.synthetic", "true", "--data.height", "16",
                    "--data.width", "16", "--data.frames", "8", "--data.video_batch_size", "1",
                    "--data.image_batch_size", "2", "--train.output_path", str(tmp_path / "run"),
                    "--train.steps", "2", "--train.optimizer.lr", "1e-2", "--env.mode", "1", "--train.ema", ""])
    tuned = load_tae(tmp_path / "run" / "tae.safetensors")
    before = {p.name: p.asnumpy() for p in start.trainable_params()}
    after = {p.name: p.asnumpy() for p in tuned.trainable_params()}
    changed = {name: not np.array_equal(value, before[name]) for name, value in after.items()}
    assert not any(c for name, c in changed.items() if not name.startswith("decoder."))
    decoder = [c for name, c in changed.items() if name.startswith("decoder.")]
    assert sum(decoder) > 0.5 * len(decoder)  # (a zero-initialised attention output leaves its query unmoved)
    assert (tuned.config.scaling_factor, tuned.config.shift_factor) == (0.7, 0.2)


@pytest.fixture(scope="module")
def train_tae(load_script):
    return load_script("tools/train_tae.py")


def test_image_batches_take_one_frame_from_each_of_many_clips():
    batches = iter(TAEBatches(synthetic=True, height=8, width=8, frames=4, video_batch_size=2, image_batch_size=5,
                              image_every=2))
    assert next(batches).shape == (2, 3, 4, 8, 8)      # a video batch
    images = next(batches)
    assert images.shape == (5, 3, 1, 8, 8)
    # synthetic clips have a random background each: five frames, five different backgrounds (clips)
    corners = {tuple(np.round(frame[:, 0, 0, 0], 5)) for frame in images}
    assert len(corners) == 5


def test_batches_continue_from_their_state():
    settings = dict(synthetic=True, height=8, width=8, frames=2, video_batch_size=2, image_batch_size=3,
                    image_every=3, crop_size=8)
    straight = iter(TAEBatches(**settings))
    first = TAEBatches(**settings)
    for _, batch in zip(range(4), first):
        np.testing.assert_array_equal(batch, next(straight))
    resumed = TAEBatches(**{**settings, "seed": 1})
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    for _, batch in zip(range(4), resumed):
        np.testing.assert_array_equal(batch, next(straight))


def test_crops_are_windows_of_each_sample_at_its_own_place():
    batches = TAEBatches(synthetic=True, height=16, width=24, frames=2, video_batch_size=8, image_batch_size=8,
                         image_every=2, crop_size=8)
    whole = np.arange(8 * 3 * 2 * 16 * 24, dtype=np.float32).reshape(8, 3, 2, 16, 24)
    batches.videos = lambda: whole
    crops, images = next(iter(batches)), next(iter(batches))
    assert crops.shape == (8, 3, 2, 8, 8)
    places = set()
    for clip, crop in zip(whole, crops):
        y, x = np.argwhere(clip[0, 0] == crop[0, 0, 0, 0])[0]
        np.testing.assert_array_equal(crop, clip[..., y:y + 8, x:x + 8])
        places.add((y, x))
    assert len(places) > 1
    assert images.shape == (8, 3, 1, 8, 8)     # image batches are cropped too
    for bad in (12, 24):                        # not a multiple of 8; larger than the 16 px height
        with pytest.raises(ValueError, match="data.crop_size"):
            TAEBatches(synthetic=True, height=16, width=24, crop_size=bad)
