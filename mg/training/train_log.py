"""Training log: JSONL (source of truth) + CSV (same rows, spreadsheet-friendly) + a loss-curve PNG.

Files in ``output_dir``: ``log.jsonl`` (one JSON object per `log` call: ``step``, ``time`` and the scalars),
``log.csv`` (one row per call; columns are ``step``, ``time`` and every scalar seen so far, in order of first
appearance; when a new scalar appears the CSV is regenerated from the JSONL, so early rows get empty cells) and
``loss_curve.png`` (train and validation loss against step, log-y). A new `TrainingLog` on an existing directory
continues the same files; after resuming from a checkpoint call `truncate_after(step)` to drop the rows the
interrupted run logged past that checkpoint.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mg.io import atomic_path, remove_stale_temporaries

JSONL_NAME = "log.jsonl"
CSV_NAME = "log.csv"
PLOT_NAME = "loss_curve.png"
_FIXED = ("step", "time")


def _replace_atomically(path: Path, write) -> None:
    with atomic_path(path, overwrite=True) as temporary, open(temporary, "wb") as f:
        write(f)


class TrainingLog:
    """Append-only scalar log with a loss curve.

    ``plot_every``: redraw the PNG when the step has advanced this much since the last drawing, and whenever
    ``val_key`` is logged (0 disables automatic drawing; `plot` can always be called). ``train_key`` / ``val_key`` name
    the scalars drawn as the train and validation curves.
    """

    def __init__(self, output_dir: str | os.PathLike, plot_every: int = 100, train_key: str = "loss",
                 val_key: str = "val_loss"):
        if plot_every < 0:
            raise ValueError(f"plot_every must be >= 0, got {plot_every}")
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.output_dir)
        self.jsonl_path = self.output_dir / JSONL_NAME
        self.csv_path = self.output_dir / CSV_NAME
        self.plot_path = self.output_dir / PLOT_NAME
        self.plot_every = plot_every
        self.train_key, self.val_key = train_key, val_key
        self.records = self._read_records()
        self.columns = self._columns_of(self.records)
        self._last_plot_step = self.records[-1]["step"] if self.records else None
        self._write_csv()

    # -- reading back ----------------------------------------------------------------------------------------------
    def _read_records(self) -> list[dict]:
        if not self.jsonl_path.exists():
            return []
        lines = self.jsonl_path.read_text(encoding="utf-8").splitlines()
        records = []
        for number, line in enumerate(lines, 1):
            try:
                records.append(json.loads(line))
            except ValueError as err:
                if number == len(lines):  # a line cut short by a killed process: drop it
                    self._write_jsonl(records)
                    break
                raise ValueError(f"{self.jsonl_path}: line {number} is not JSON ({err})") from err
        return records

    @staticmethod
    def _columns_of(records: list[dict]) -> list[str]:
        columns = list(_FIXED)
        for record in records:
            columns += [key for key in record if key not in columns]
        return columns

    # -- writing -----------------------------------------------------------------------------------------------------
    def log(self, step: int, **scalars: float) -> None:
        """Record ``scalars`` (numbers, NumPy or 0-d MindSpore values) at ``step``; non-finite values become null."""
        bad = [key for key in scalars if key in _FIXED]
        if bad:
            raise ValueError(f"TrainingLog.log: {bad} are reserved column names")
        record = {"step": int(step), "time": round(time.time(), 3)}
        for key, value in scalars.items():
            array = np.asarray(value.asnumpy() if hasattr(value, "asnumpy") else value)
            if array.size != 1 or not np.issubdtype(array.dtype, np.number):
                raise TypeError(f"TrainingLog.log: {key} must be one number, got {type(value).__name__} {array.shape}")
            value = float(array.reshape(()))
            record[key] = value if math.isfinite(value) else None
        self.records.append(record)
        with open(self.jsonl_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        new_columns = [key for key in record if key not in self.columns]
        if new_columns:
            self.columns += new_columns
            self._write_csv()
        else:
            with open(self.csv_path, "a", encoding="utf-8", newline="") as f:
                csv.DictWriter(f, self.columns).writerow(record)
        if self._should_plot(record):
            self.plot()

    def _should_plot(self, record: dict) -> bool:
        if self.plot_every == 0:
            return False
        if record.get(self.val_key) is not None or self._last_plot_step is None:
            return True
        return record["step"] - self._last_plot_step >= self.plot_every

    def _write_jsonl(self, records: list[dict]) -> None:
        text = "".join(json.dumps(r) + "\n" for r in records)
        _replace_atomically(self.jsonl_path, lambda f: f.write(text.encode("utf-8")))

    def _write_csv(self) -> None:
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, self.columns)
        writer.writeheader()
        writer.writerows(self.records)
        _replace_atomically(self.csv_path, lambda f: f.write(buffer.getvalue().encode("utf-8")))

    def truncate_after(self, step: int) -> None:
        """Forget rows with a step greater than ``step`` (used when resuming from the checkpoint of ``step``), in
        the files too, and redraw an existing loss curve without them."""
        kept = [r for r in self.records if r["step"] <= step]
        if len(kept) != len(self.records):
            self.records = kept
            self._write_jsonl(kept)
            self._write_csv()
            if self.plot_path.exists():
                self.plot()

    def plot(self) -> Path:
        """Draw ``train_key`` and ``val_key`` against step into loss_curve.png (log-y); return its path."""
        figure = Figure(figsize=(7, 4.5), dpi=100)
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        for key, label, style in ((self.train_key, "train", "-"), (self.val_key, "validation", "o-")):
            points = [(r["step"], r[key]) for r in self.records if r.get(key) is not None and r[key] > 0]
            if points:
                steps, values = zip(*points)
                axes.plot(steps, values, style, label=f"{label} ({key})", markersize=3, linewidth=1)
        axes.set_yscale("log")
        axes.set_xlabel("step")
        axes.set_ylabel("loss")
        axes.grid(True, which="both", alpha=0.3)
        if axes.lines:
            axes.legend()
        figure.tight_layout()
        _replace_atomically(self.plot_path, lambda f: figure.savefig(f, format="png"))
        self._last_plot_step = self.records[-1]["step"] if self.records else None
        return self.plot_path
