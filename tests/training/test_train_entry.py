"""train.py end to end on a tiny cached dataset: config errors, outputs, exact resume, the run directory (lock,
restart, logs after a resume), SIGTERM, stage growth."""
import json
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


@pytest.mark.parametrize("bad, words", [
    (["--train.save.every", "0"], ["train.save.every", ">= 1"]),
    (["--train.log.every", "0"], ["train.log.every", ">= 1"]),
    (["--train.steps", "0"], ["train.steps", ">= 1"]),
    (["--train.steps", "-1"], ["train.steps", ">= 1"]),
    (["--env.mode", "7"], ["env.mode", "0", "1"]),
    (["--tae.path", "/nonexistent/tae.safetensors"], ["tae.path", "/nonexistent/tae.safetensors", "no such file"]),
    (["--train.output_path", "{file}"], ["train.output_path", "not a folder"]),
], ids=["save-every-0", "log-every-0", "steps-0", "steps-negative", "mode-7", "missing-tae", "output-is-a-file"])
def test_bad_values_fail_before_anything_is_built(data, tmp_path, capsys, monkeypatch, bad, words):
    def no_model(*_):
        raise AssertionError("a model was built")
    monkeypatch.setattr(train, "build_model", no_model)
    (tmp_path / "a_file").write_text("")
    bad = [arg.format(file=tmp_path / "a_file") for arg in bad]
    with pytest.raises(SystemExit):
        train.main(train_args(data, tmp_path / "out", 2) + bad)
    err = capsys.readouterr().err
    assert all(word in err for word in words), err


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


def logged_steps(output):
    jsonl = [json.loads(line)["step"] for line in (Path(output) / "log.jsonl").read_text().splitlines()]
    csv_rows = [int(line.split(",")[0]) for line in (Path(output) / "log.csv").read_text().splitlines()[1:]]
    assert csv_rows == jsonl
    return jsonl


def test_a_resumed_run_logs_each_step_once(data, tmp_path):
    out = tmp_path / "out"
    train.main(train_args(data, out, 3))
    # as if killed while saving step 3: the step is logged, its checkpoint has no sidecar; step 2's is the latest
    CheckpointManager(out / "ckpt").path_for(3).with_suffix(".json").unlink()
    assert train.main(train_args(data, out, 5, ["--train.resume", "latest"])) == 5
    assert logged_steps(out) == [1, 2, 3, 4, 5]


def test_a_run_stopped_before_its_first_checkpoint_starts_again_with_resume_latest(data, tmp_path, monkeypatch,
                                                                                     caplog):
    out = tmp_path / "out"

    class Killed(Exception):
        pass

    def killed(*_, **__):
        raise Killed("killed before the first checkpoint")
    with monkeypatch.context() as patch:
        patch.setattr(CheckpointManager, "save", killed)
        with pytest.raises(Killed):
            train.main(train_args(data, out, 3))
    assert logged_steps(out) == [1, 2] and CheckpointManager(out / "ckpt").latest() is None
    with pytest.raises(FileExistsError, match="no complete checkpoint.*--train.resume latest"):
        train.main(train_args(data, out, 3))
    assert train.main(train_args(data, out, 3, ["--train.resume", "latest"])) == 3
    assert "starting from step 0" in caplog.text
    assert logged_steps(out) == [1, 2, 3]
    assert CheckpointManager(out / "ckpt").latest() is not None
    with pytest.raises(FileNotFoundError, match="holds no run"):  # nothing to resume: a typo in the path?
        train.main(train_args(data, tmp_path / "other", 3, ["--train.resume", "latest"]))


def test_a_running_run_locks_its_folder_and_saves_a_checkpoint_on_sigterm(data, tmp_path):
    out = tmp_path / "out"
    args = train_args(data, out, 10_000, ["--train.save.every", "100000", "--valid.csv_path", "null"])
    proc = subprocess.Popen([sys.executable, str(REPO / "train.py"), *args], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = out / "log.jsonl"
    deadline = time.time() + 240
    while not (log.exists() and len(log.read_text().splitlines()) >= 3):
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() else "timeout"
        time.sleep(0.5)
    # a second run on the same folder fails at start, naming the folder and the process that holds it
    with pytest.raises(RuntimeError, match=f"{out}.*pid {proc.pid}"):
        train.main(args + ["--train.resume", "latest"])
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
    np.testing.assert_allclose(h2[:2], h1, atol=1e-5)  # the learned rows stay where they are (extended table)
