"""Encode the videos/images of a training CSV with the TAE and cache their latents (layout: docs/data.md).

Each video is sampled, resized and centre-cropped to its bucket as the dataset does, encoded, and its raw posterior
(mean, std) written to `<output_folder>/<video>.safetensors`. Existing files are skipped (resumable); under msrun
every rank takes its share of the videos.

    python tools/cache_tae_latents.py --csv_path data.csv --video_folder videos --output_folder latents \
        --buckets '[{"height": 256, "width": 256, "frames": 32, "batch_size": 1}]' --target_fps 16 \
        --tae_checkpoint tae.safetensors
    msrun --worker_num=8 --local_worker_num=8 python tools/cache_tae_latents.py ...   # sharded
"""
import logging
from typing import Optional

from jsonargparse import auto_cli

from mg.data import Bucket
from mg.data.caching import cache_tae_latents


def main(csv_path: str, output_folder: str, buckets: list[Bucket], tae_checkpoint: str, tae_preset: Optional[str] = None,
         video_folder: str = "", target_fps: Optional[float] = None, frame_stride: Optional[int] = None,
         batch_size: int = 1, tiled: bool = True, rank: Optional[int] = None, world_size: Optional[int] = None):
    """Cache TAE latents.

    Args:
        csv_path: training CSV (`video`, `caption`, optional `fps`, `frames`, `height`, `width`).
        output_folder: where latent files go (the dataset's `tae_latent_folder`).
        buckets: the training buckets (height, width, frames, batch_size); each video is encoded at its bucket's shape.
        tae_checkpoint: TAE weights (safetensors, with the sidecar JSON config written by save_tae).
        tae_preset: configuration preset of the weights, for a checkpoint without its sidecar JSON.
        video_folder: folder relative video paths are resolved against.
        target_fps: sample clips at this FPS.
        frame_stride: or sample every n-th frame (neither: every frame).
        batch_size: videos per TAE call.
        tiled: encode with temporal tiles (bounded memory).
        rank: shard index (default: from msrun, else 0).
        world_size: number of shards (default: from msrun, else 1).
    """
    from mg.models.tae import load_tae, tae_config

    config = tae_config(tae_preset) if tae_preset else None
    counts = cache_tae_latents(csv_path, output_folder, buckets, lambda: load_tae(tae_checkpoint, config),
                               video_folder=video_folder, target_fps=target_fps, frame_stride=frame_stride,
                               batch_size=batch_size, tiled=tiled, rank=rank, world_size=world_size)
    logging.getLogger("cache_tae_latents").info("done: %s", counts)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    auto_cli(main, as_positional=False)
