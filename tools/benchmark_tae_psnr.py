"""Benchmark: train the toy world's TAE on CPU and report the reconstruction PSNR/SSIM of held-out clips, and how
often the toy world's pixel classifiers read the right colour, shape and direction back from the reconstructions
(the most a DiT trained in this TAE's latent space can reach).

    python tools/benchmark_tae_psnr.py --output_dir runs/tae_psnr [--steps N] [--shape_size 24] [--tae_config F]

Three steps, each the project's own tool: make the toy dataset (synthetic coloured shapes moving over a plain
background; 4 colour/shape/direction combinations are held out of training), train the TAE with
configs/tae/train_toy.yaml (the same step scripts/train_toy.sh runs), and evaluate the posterior-mean
reconstructions of the held-out clips with tools/eval_tae.py (PSNR/SSIM over [0, 1] pixels, untiled).
"""
import csv
import subprocess
import sys
from pathlib import Path
from typing import Optional

import mg  # noqa: F401  (quiet logging before mindspore loads)
import numpy as np
import pandas as pd
from jsonargparse import CLI

from mg.data.toy_world import ATTRIBUTES, adherence, classify
from mg.data.video_io import probe, read_frames

TOOLS = Path(__file__).resolve().parent


def _run(*args):
    subprocess.run([sys.executable, *map(str, args)], check=True)


def reconstruction_adherence(csv_path, samples_dir):
    """Colour / shape / direction rates read from the reconstructions, the right halves of eval_tae.py's
    side-by-side samples (one per row of the CSV, in its order)."""
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    records = []
    for index, row in table.iterrows():
        path = str(Path(samples_dir) / f"{index:03d}_{Path(row['video']).stem}.mp4")
        frames = read_frames(path, np.arange(probe(path).num_frames))
        predicted = classify(frames[:, :, frames.shape[2] // 2:])
        records.append({**{a: row[a] for a in ATTRIBUTES}, **{f"pred_{a}": predicted[a] for a in ATTRIBUTES}})
    return adherence(records)


def main(output_dir: str = "runs/tae_psnr", steps: Optional[int] = None,
         tae_config: str = "configs/tae/train_toy.yaml", shape_size: Optional[int] = None):
    """Make data (shapes `shape_size` px wide, default a quarter of the frame), train with `tae_config` (`steps`,
    default the config's), evaluate; prints the mean held-out PSNR and SSIM (also in <output_dir>/eval/metrics.csv)
    and the adherence rates of the reconstructions. Steps already done in output_dir are kept (a finished TAE is only
    evaluated). The option is not called --config: that name loads this tool's own options from a file."""
    out = Path(output_dir)
    data, tae = out / "data", out / "tae"
    if not (data / "heldout.csv").exists():
        _run(TOOLS / "make_toy_dataset.py", "--output_folder", data,
             *(["--shape_size", shape_size] if shape_size is not None else []))
    if not (tae / "tae.safetensors").exists():
        _run(TOOLS / "train_tae.py", "--config", tae_config, "--data.csv_path", data / "train.csv",
             "--data.video_folder", data, "--train.output_path", tae,
             *(["--train.steps", steps] if steps is not None else []),
             *(["--train.resume", "latest"] if (tae / "config.yaml").exists() else []))
    _run(TOOLS / "eval_tae.py", "--tae_checkpoint", tae / "tae.safetensors", "--videos", data / "heldout.csv",
         "--video_folder", data, "--output_dir", out / "eval", "--tiled", "false", "--overwrite", "true",
         "--num_samples", len(pd.read_csv(data / "heldout.csv")))
    with open(out / "eval" / "metrics.csv") as f:
        mean = [row for row in csv.DictReader(f)][-1]
    print(f"TAE {tae / 'tae.safetensors'}: held-out PSNR {float(mean['psnr']):.2f} dB, "
          f"SSIM {float(mean['ssim']):.4f}")
    rates = reconstruction_adherence(data / "heldout.csv", out / "eval" / "samples")
    print("read back from the reconstructions: " + ", ".join(f"{k} {v:.1%}" for k, v in rates.items()))


if __name__ == "__main__":
    CLI(main)
