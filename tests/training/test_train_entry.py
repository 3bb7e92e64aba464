"""train.py end to end on a tiny cached dataset: config errors, outputs, exact resume, SIGTERM, stage growth."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import train
from mg.io import load_checkpoint
from mg.models.dit import load_dit
from mg.training.checkpoint import CheckpointManager, split_namespaces

from training.cached_dataset import train_args, write_cached_dataset

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_cached_dataset(tmp_path_factory.mktemp("cached"))


def final_weights(output):
    tensors, metadata = load_checkpoint(CheckpointManager(Path(output) / "ckpt").latest())
    return split_namespaces(tensors), metadata


@pytest.mark.parametrize("bad, message", [
    (["--model.dimm", "3"], "dimm"),
    (["--train.steps", "many"], "train.steps"),
    (["--dataset.buckets", '[{"height": "tall"}]'], "buckets"),
])
def test_config_errors_name_the_key(data, tmp_path, capsys, bad, message):
    with pytest.raises(SystemExit):
        train.main(train_args(data, tmp_path / "out", 2) + bad)
    assert message in capsys.readouterr().err


def test_missing_csv_column_fails_at_start(data, tmp_path):
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("path,caption\na.mp4,x\n")
    with pytest.raises(ValueError, match="video"):
        train.main(train_args(data, tmp_path / "out", 2) + ["--dataset.csv_path", str(bad_csv)])


def test_run_writes_config_log_curve_and_checkpoints_and_refuses_to_overwrite(data, tmp_path):
    out = tmp_path / "out"
    assert train.main(train_args(data, out, 4)) == 4
    for name in ("config.yaml", "log.jsonl", "log.csv", "loss_curve.png", "train.log"):
        assert (out / name).is_file(), name
    assert [p.name for p in CheckpointManager(out / "ckpt").list()] == ["step_000000002.safetensors",
                                                                        "step_000000004.safetensors"]
    spaces, metadata = final_weights(out)
    assert set(spaces) == {"model", "optimizer", "ema"} and metadata["step"] == 4
    assert "val_loss" in (out / "log.csv").read_text().splitlines()[0]
    model = load_dit(CheckpointManager(out / "ckpt").latest())  # what inference loads
    assert model.config.depth == 1
    with pytest.raises(FileExistsError, match="resume"):
        train.main(train_args(data, out, 6))


@pytest.mark.parametrize("extra", [[], ["--train.settings.gradient_accumulation_steps", "2", "--env.mode", "1"]],
                         ids=["graph", "pynative-accumulation"])
def test_resumed_run_ends_with_the_same_weights(data, tmp_path, extra):
    straight, split = tmp_path / "straight", tmp_path / "split"
    train.main(train_args(data, straight, 6, extra))
    train.main(train_args(data, split, 4, extra))
    train.main(train_args(data, split, 6, extra + ["--train.resume", "latest"]))
    (a, meta_a), (b, meta_b) = final_weights(straight), final_weights(split)
    assert meta_a["loader"] == meta_b["loader"] and meta_a["rng"] == meta_b["rng"]
    for space in ("model", "ema", "optimizer"):
        for name in a[space]:
            np.testing.assert_allclose(b[space][name], a[space][name], rtol=1e-6, atol=1e-7,
                                       err_msg=f"{space}/{name}")


def test_sigterm_saves_a_checkpoint_before_exiting(data, tmp_path):
    out = tmp_path / "out"
    args = train_args(data, out, 10_000, ["--train.save.every", "100000", "--valid.csv_path", "null"])
    proc = subprocess.Popen([sys.executable, str(REPO / "train.py"), *args], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = out / "log.jsonl"
    deadline = time.time() + 240
    while not (log.exists() and len(log.read_text().splitlines()) >= 3):
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() else "timeout"
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    assert proc.returncode == 0
    _, metadata = final_weights(out)
    assert 3 <= metadata["step"] < 10_000


def test_stage_growth_loads_a_smaller_stage_checkpoint(data, tmp_path):
    stage1 = tmp_path / "stage1"
    train.main(train_args(data, stage1, 2))
    checkpoint = CheckpointManager(stage1 / "ckpt").latest()
    grown = ["--model.max_t", "4", "--model.max_h", "4", "--model.max_w", "4",
             "--model.pretrained_model_path", str(checkpoint), "--train.optimizer.lr", "1e-12",
             "--train.lr_scheduler.min_lr", "0", "--train.ema", "null"]
    train.main(train_args(data, tmp_path / "stage2", 2, grown))
    stage1_weights, _ = final_weights(stage1)
    stage2_weights, _ = final_weights(tmp_path / "stage2")
    h1, h2 = stage1_weights["ema"]["pos_embed.table_h"], stage2_weights["model"]["pos_embed.table_h"]
    assert h2.shape == (4, h1.shape[1])
    np.testing.assert_allclose(h2[[0, -1]], h1[[0, -1]], atol=1e-5)  # ends of the interpolated table
