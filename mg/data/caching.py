"""The caching jobs behind tools/cache_tae_latents.py and tools/cache_text_embeddings.py (layout in docs/data.md).

Both are resumable (a file that exists is skipped; files are written under a temporary name and renamed, so an
interrupted run leaves no partial file, and a run starts by deleting the temporaries of killed runs) and shard their
work: rank r of w takes every w-th item of a sorted list. Models are built through a factory only when something is
left to encode.
"""
import logging
import os
from collections import defaultdict
from typing import Callable, Optional

import mindspore as ms
import numpy as np
from tqdm import tqdm

from mg.data.buckets import Bucket
from mg.data.dataset import VideoDataset
from mg.data.distributed import rank_and_world_size
from mg.data.latent_cache import latent_path, save_latent
from mg.data.table import Row, read_table
from mg.data.text_cache import EMPTY_PROMPT, prepared_prompt, save_text_emb, text_emb_path
from mg.data.transforms import frame_step
from mg.data.video_io import probe
from mg.io import remove_stale_temporaries

_logger = logging.getLogger(__name__)


def cache_tae_latents(csv_path: str, output_folder: str, buckets: list[Bucket], build_tae: Callable[[], object],
                      video_folder: str = "", target_fps: Optional[float] = None, frame_stride: Optional[int] = None,
                      batch_size: int = 1, tiled: bool = True, rank: Optional[int] = None,
                      world_size: Optional[int] = None) -> dict:
    """Encode every usable video of the CSV at its bucket's shape; returns counts {"written", "skipped", "failed"}.

    Each video is sampled (middle clip), resized and centre-cropped exactly as VideoDataset does in pixel mode,
    encoded with `build_tae()` (an object with `encode(x, tiled) -> (mean, logvar)` and `set_train`), and its raw
    posterior (mean, std = exp(0.5 logvar)) saved to `<output_folder>/<video>.safetensors`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rank, world_size = rank_and_world_size(rank, world_size)
    remove_stale_temporaries(output_folder, recursive=True)
    dataset = VideoDataset(csv_path, buckets, video_folder=video_folder, target_fps=target_fps,
                           frame_stride=frame_stride, random_clip_start=False)
    first_index = {}  # video -> (sample index, "video" or "source_video": the file as the sample's result or source)
    for index, sample in enumerate(dataset.samples):
        first_index.setdefault(sample.row.video, (index, "video"))  # a video listed twice is encoded once
        if sample.row.source_video:
            first_index.setdefault(sample.row.source_video, (index, "source_video"))
    counts = {"written": 0, "skipped": 0, "failed": 0}
    todo = defaultdict(list)  # bucket -> [(video, sample index, key)], so one TAE call sees one shape
    for video in sorted(first_index)[rank::world_size]:
        if os.path.isfile(latent_path(output_folder, video)):
            counts["skipped"] += 1
        else:
            index, key = first_index[video]
            todo[int(dataset.group_ids[index])].append((video, index, key))
    if not todo:
        return counts
    tae = build_tae()
    tae.set_train(False)
    progress = tqdm(total=sum(map(len, todo.values())), desc=f"TAE latents (rank {rank})", unit="video")
    for group, entries in sorted(todo.items()):
        bucket = dataset.buckets[group]
        for begin in range(0, len(entries), batch_size):
            chunk = entries[begin:begin + batch_size]
            loaded = []
            for video, index, key in chunk:
                try:
                    loaded.append((video, index, dataset.load_sample(index, np.random.default_rng(0))[key]))
                except Exception as error:  # a bad file is reported and skipped; the others are still cached
                    _logger.warning("skipping %s: %s", video, error)
                    counts["failed"] += 1
            if loaded:
                mean, logvar = tae.encode(ms.Tensor(np.stack([pixels for *_, pixels in loaded])), tiled=tiled)
                mean, std = mean.asnumpy(), np.exp(0.5 * logvar.asnumpy())
                for (video, index, _), sample_mean, sample_std in zip(loaded, mean, std):
                    save_latent(latent_path(output_folder, video), sample_mean, sample_std, video,
                                dataset.samples[index].fps, bucket.frames, bucket.height, bucket.width)
                    counts["written"] += 1
            progress.update(len(chunk))
    progress.close()
    return counts


def _clip_fps(row: Row, target_fps: Optional[float], frame_stride: Optional[int]) -> Optional[float]:
    """FPS of the clip the dataset samples from this row (None for images); probes the file only if needed."""
    if row.is_image:
        return None
    if target_fps is not None:
        return float(target_fps)
    return frame_step(row.fps or probe(row.path).fps, None, frame_stride)[1]


def collect_prompts(csv_path: str, kind: str, video_folder: str = "", target_fps: Optional[float] = None,
                    frame_stride: Optional[int] = None) -> list[str]:
    """Sorted distinct prompts encoder `kind` is asked for by the dataset on this CSV, the empty prompt included."""
    prompts = {EMPTY_PROMPT}
    for row in read_table(csv_path, video_folder):
        try:
            fps = _clip_fps(row, target_fps, frame_stride)
        except Exception as error:  # unreadable here means skipped by the dataset too
            _logger.warning("skipping %s: %s", row.path, error)
            continue
        prompts.add(prepared_prompt(row.caption, fps, kind))
    return sorted(prompts)


def cache_text_embeddings(csv_path: str, output_folders: dict[str, str], build_encoder: Callable[[str], object],
                          video_folder: str = "", target_fps: Optional[float] = None,
                          frame_stride: Optional[int] = None, batch_size: int = 16, rank: Optional[int] = None,
                          world_size: Optional[int] = None) -> dict:
    """Encode every prompt of the CSV with each encoder kind in `output_folders`; returns {kind: {"written", "skipped"}}.

    `build_encoder(kind)` returns an object with `encode(list[str]) -> (emb (B, L, C), mask (B, L))` as NumPy;
    `target_fps` / `frame_stride` must be the training ones, as they decide the "FPS-<n>" prefix.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rank, world_size = rank_and_world_size(rank, world_size)
    counts = {}
    for kind, folder in output_folders.items():
        remove_stale_temporaries(folder, recursive=True)
        prompts = collect_prompts(csv_path, kind, video_folder, target_fps, frame_stride)[rank::world_size]
        todo = [p for p in prompts if not os.path.isfile(text_emb_path(folder, p))]
        counts[kind] = {"written": 0, "skipped": len(prompts) - len(todo)}
        if not todo:
            continue
        encoder = build_encoder(kind)
        for begin in tqdm(range(0, len(todo), batch_size), desc=f"{kind} embeddings (rank {rank})", unit="batch"):
            batch = todo[begin:begin + batch_size]
            embs, masks = encoder.encode(batch)
            for prompt, emb, mask in zip(batch, embs, masks):
                save_text_emb(text_emb_path(folder, prompt), emb, mask, prompt, kind)
            counts[kind]["written"] += len(batch)
    return counts
