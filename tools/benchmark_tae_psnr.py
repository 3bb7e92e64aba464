"""Benchmark: train the toy world's TAE on CPU and report the reconstruction PSNR/SSIM of held-out clips.

    python tools/benchmark_tae_psnr.py --output_dir runs/tae_psnr [--steps N]

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

from jsonargparse import CLI

TOOLS = Path(__file__).resolve().parent


def _run(*args):
    subprocess.run([sys.executable, *map(str, args)], check=True)


def main(output_dir: str = "runs/tae_psnr", steps: Optional[int] = None, config: str = "configs/tae/train_toy.yaml"):
    """Make data, train (`steps`, default the config's), evaluate; prints the mean held-out PSNR and SSIM (also in
    <output_dir>/eval/metrics.csv). Steps already done in output_dir are kept (a finished TAE is only evaluated)."""
    out = Path(output_dir)
    data, tae = out / "data", out / "tae"
    if not (data / "heldout.csv").exists():
        _run(TOOLS / "make_toy_dataset.py", "--output_folder", data)
    if not (tae / "tae.safetensors").exists():
        _run(TOOLS / "train_tae.py", "--config", config, "--data.csv_path", data / "train.csv",
             "--data.video_folder", data, "--train.output_dir", tae,
             *(["--train.steps", steps] if steps is not None else []),
             *(["--train.resume", "latest"] if tae.exists() else []))
    _run(TOOLS / "eval_tae.py", "--tae_checkpoint", tae / "tae.safetensors", "--videos", data / "heldout.csv",
         "--video_folder", data, "--output_dir", out / "eval", "--tiled", "false", "--overwrite", "true")
    with open(out / "eval" / "metrics.csv") as f:
        mean = [row for row in csv.DictReader(f)][-1]
    print(f"TAE {tae / 'tae.safetensors'}: held-out PSNR {float(mean['psnr']):.2f} dB, "
          f"SSIM {float(mean['ssim']):.4f}")


if __name__ == "__main__":
    CLI(main)
