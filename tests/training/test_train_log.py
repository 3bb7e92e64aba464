"""JSONL/CSV training log, growing columns, resume (truncation, also of the curve), torn lines and the loss-curve
PNG."""
import csv
import json

import matplotlib.image
import mindspore as ms
import numpy as np
import pytest

from mg.training.train_log import TrainingLog


def _csv_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_jsonl_and_csv_hold_the_same_rows_with_growing_columns(tmp_path):
    log = TrainingLog(tmp_path, plot_every=0)
    log.log(1, loss=0.5, lr=1e-4)
    log.log(2, loss=np.float32(0.25), lr=ms.Tensor(2e-4, ms.float32))
    log.log(2, val_loss=0.75)
    log.log(3, loss=float("nan"), lr=3e-4)

    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 2, 3]
    assert lines[1]["loss"] == 0.25 and lines[1]["lr"] == pytest.approx(2e-4)
    assert lines[2]["val_loss"] == 0.75 and "loss" not in lines[2]
    assert lines[3]["loss"] is None

    rows = _csv_rows(tmp_path / "log.csv")
    assert list(rows[0]) == ["step", "time", "loss", "lr", "val_loss"]
    assert [r["step"] for r in rows] == ["1", "2", "2", "3"]
    assert rows[0]["val_loss"] == "" and float(rows[2]["val_loss"]) == 0.75
    assert float(rows[1]["loss"]) == 0.25 and rows[2]["loss"] == "" and rows[3]["loss"] == ""


def test_bad_scalars_are_refused(tmp_path):
    log = TrainingLog(tmp_path, plot_every=0)
    with pytest.raises(ValueError, match="reserved"):
        log.log(1, time=3)
    with pytest.raises(TypeError, match="loss must be one number"):
        log.log(1, loss=np.zeros(3))
    with pytest.raises(TypeError, match="note must be one number"):
        log.log(1, note="hello")


def test_resume_continues_files_and_truncates_rows_past_the_checkpoint(tmp_path):
    log = TrainingLog(tmp_path, plot_every=0)
    for step in range(1, 6):
        log.log(step, loss=1.0 / step)
    with open(tmp_path / "log.jsonl", "a") as f:
        f.write('{"step": 6, "lo')  # the process was killed mid-line

    resumed = TrainingLog(tmp_path, plot_every=0)
    assert [r["step"] for r in resumed.records] == [1, 2, 3, 4, 5]
    resumed.truncate_after(3)
    resumed.log(4, loss=0.3, grad_norm=2.0)
    steps = [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    rows = _csv_rows(tmp_path / "log.csv")
    assert [r["step"] for r in rows] == ["1", "2", "3", "4"]
    assert float(rows[3]["loss"]) == 0.3 and float(rows[3]["grad_norm"]) == 2.0 and rows[0]["grad_norm"] == ""


def test_corrupt_line_in_the_middle_is_an_error(tmp_path):
    (tmp_path / "log.jsonl").write_text('{"step": 1, "loss": 1}\nGARBAGE\n{"step": 2, "loss": 1}\n')
    with pytest.raises(ValueError, match="log.jsonl: line 2"):
        TrainingLog(tmp_path)


def test_loss_curve_png_is_written_and_refreshed(tmp_path):
    log = TrainingLog(tmp_path, plot_every=10)
    png = tmp_path / "loss_curve.png"
    log.log(0, loss=1.0)
    assert png.exists()  # first call draws
    png.unlink()
    log.log(5, loss=0.8)
    assert not png.exists()  # not yet plot_every steps later
    log.log(6, val_loss=0.9)
    assert png.exists()  # validation values always redraw
    png.unlink()
    log.log(16, loss=0.5)
    assert png.exists()
    image = matplotlib.image.imread(png)
    assert image.shape[:2] == (450, 700)
    rgb = np.round(image[..., :3] * 255).astype(int)
    for colour in ((31, 119, 180), (255, 127, 14)):  # matplotlib's first two line colours: train, validation
        assert np.any(np.all(np.abs(rgb - colour) <= 2, axis=-1)), f"no {colour} curve in the plot"
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    log.truncate_after(5)  # a resume drops the validation row of step 6: the curve is redrawn without it
    rgb = np.round(matplotlib.image.imread(png)[..., :3] * 255).astype(int)
    assert not np.any(np.all(np.abs(rgb - (255, 127, 14)) <= 2, axis=-1))
