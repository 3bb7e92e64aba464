"""Evaluate a TAE: PSNR, SSIM (and LPIPS with weights) of reconstructions over a CSV or a folder of videos/images.

    python tools/eval_tae.py --tae_checkpoint runs/tae/tae.safetensors --videos data/val.csv --output_dir eval \
        [--height 256 --width 256 --max_frames 32 --lpips_weights lpips_vgg.safetensors --num_samples 4]

Writes `metrics.csv` (one row per file, then a mean row) and, for the first `num_samples` files, side-by-side
comparisons (input | reconstruction) as mp4 (or PNG for images) under `samples/`.
"""
import csv
import logging
from pathlib import Path
from typing import Optional

import mg  # noqa: F401  (quiet logging before mindspore loads)
import mindspore as ms
import numpy as np
from jsonargparse import CLI
from tqdm import tqdm

from mg.data.table import is_image, read_table
from mg.data.transforms import resize_center_crop, to_model_range
from mg.data.video_io import probe, read_frames
from mg.models.tae import load_tae
from mg.models.tae.losses import LPIPS
from mg.models.tae.media import to_uint8_frames, write_video
from mg.models.tae.metrics import psnr, ssim

_logger = logging.getLogger("eval_tae")
_VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def list_inputs(videos: str, video_folder: str = ""):
    """Files of a CSV (`video` column) or of a folder (video/image suffixes), sorted."""
    path = Path(videos)
    if path.is_dir():
        files = sorted(str(p) for p in path.iterdir() if p.suffix.lower() in _VIDEO_SUFFIXES)
    elif path.is_file() and path.suffix.lower() == ".csv":
        files = [row.path for row in read_table(str(path), video_folder)]
    else:
        raise FileNotFoundError(f"eval_tae: --videos {videos} is neither a folder nor a .csv file")
    if not files:
        raise ValueError(f"eval_tae: no videos found in {videos}")
    return files


def main(tae_checkpoint: str, videos: str, output_dir: str, video_folder: str = "", height: Optional[int] = None,
         width: Optional[int] = None, max_frames: int = 32, lpips_weights: str = "", num_samples: int = 4,
         tiled: bool = True, overwrite: bool = False):
    """Evaluate reconstructions (posterior mean) of every file.

    Args:
        tae_checkpoint: TAE weights (safetensors + sidecar JSON from save_tae).
        videos: a CSV with a `video` column or a folder of videos/images.
        output_dir: where metrics.csv and samples/ go.
        video_folder: folder relative CSV paths are resolved against.
        height: resize + centre-crop to this size (with width); default: each file's own size.
        width: see height.
        max_frames: evaluate at most this many leading frames per video.
        lpips_weights: LPIPS/VGG-16 safetensors; adds an LPIPS column.
        num_samples: files that get a side-by-side comparison.
        tiled: temporal tiling for encode/decode.
        overwrite: replace an existing metrics.csv.
    """
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    out = Path(output_dir)
    if (out / "metrics.csv").exists() and not overwrite:
        raise FileExistsError(f"{out}/metrics.csv exists; pass --overwrite true to replace it")
    if (height is None) != (width is None):
        raise ValueError("--height and --width go together")
    files = list_inputs(videos, video_folder)
    tae = load_tae(tae_checkpoint)
    tae.set_train(False)
    lpips = LPIPS().load_weights(lpips_weights) if lpips_weights else None
    rows = []
    for index, path in enumerate(tqdm(files, desc="eval TAE", unit="video")):
        count = 1 if is_image(path) else min(probe(path).num_frames, max_frames)
        frames = read_frames(path, np.arange(count))
        if height is not None:
            frames = resize_center_crop(frames, height, width)
        x = ms.Tensor(to_model_range(frames)[None])
        mean, _ = tae.encode(x, tiled=tiled)
        recon = tae.decode(mean, x.shape[2], tiled=tiled, size=x.shape[3:])
        ref, rec = (x.asnumpy()[0] + 1) / 2, np.clip((recon.asnumpy()[0] + 1) / 2, 0, 1)
        row = {"video": path, "frames": count, "psnr": psnr(rec, ref), "ssim": ssim(rec, ref)}
        if lpips is not None:
            row["lpips"] = float(lpips(ms.Tensor(np.clip(recon.asnumpy(), -1, 1)), x).asnumpy())
        rows.append(row)
        if index < num_samples:
            side_by_side = np.concatenate([to_uint8_frames(x.asnumpy()[0]), to_uint8_frames(rec * 2 - 1)], axis=2)
            suffix = ".png" if count == 1 else ".mp4"
            fps = 1.0 if count == 1 else probe(path).fps
            write_video(out / "samples" / f"{index:03d}_{Path(path).stem}{suffix}", side_by_side, fps)
    metrics = [k for k in rows[0] if k not in ("video", "frames")]
    mean_row = {"video": "MEAN", "frames": sum(r["frames"] for r in rows),
                **{k: float(np.mean([r[k] for r in rows])) for k in metrics}}
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["video", "frames", *metrics])
        writer.writeheader()
        writer.writerows([*rows, mean_row])
    _logger.info("%d files: %s", len(rows), ", ".join(f"{k} {mean_row[k]:.4f}" for k in metrics))


if __name__ == "__main__":
    CLI(main, as_positional=False)
