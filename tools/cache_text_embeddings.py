"""Encode the captions of a training CSV with each text encoder and cache the embeddings (layout: docs/data.md).

Every caption is prepared as the dataset will ask for it (the "FPS-<n>" prefix of its sampled clip for UL2 and
MetaCLIP, the quoted spans for ByT5); each distinct prompt, plus the empty prompt used for classifier-free guidance,
is written once per encoder. Existing files are skipped (resumable); under msrun every rank takes its share.

    python tools/cache_text_embeddings.py --csv_path data.csv --video_folder videos --target_fps 16 \
        --output_folders '{"ul2": "emb/ul2", "byt5": "emb/byt5"}' \
        --encoder_paths '{"ul2": "ckpt/ul2", "byt5": "ckpt/byt5"}' --max_lengths '{"ul2": 300, "byt5": 100}'
"""
import logging
from typing import Optional

from jsonargparse import auto_cli

from mg.data.caching import cache_text_embeddings


def main(csv_path: str, output_folders: dict[str, str], encoder_paths: dict[str, str], max_lengths: dict[str, int],
         video_folder: str = "", target_fps: Optional[float] = None, frame_stride: Optional[int] = None,
         batch_size: int = 16, rank: Optional[int] = None, world_size: Optional[int] = None):
    """Cache text embeddings.

    Args:
        csv_path: training CSV (`video`, `caption`, optional `fps`, ...).
        output_folders: {encoder kind (ul2, byt5, metaclip): folder} (the dataset's `text_emb_folders`).
        encoder_paths: {kind: local Hugging Face-format checkpoint folder}.
        max_lengths: {kind: tokens}; every prompt is padded/truncated to it so embeddings batch together.
        video_folder: folder relative video paths are resolved against (probed for FPS when the CSV lacks it).
        target_fps: the training clip FPS (decides the FPS prefix).
        frame_stride: or the training frame stride (neither: native FPS).
        batch_size: prompts per encoder call.
        rank: shard index (default: from msrun, else 0).
        world_size: number of shards (default: from msrun, else 1).
    """
    from mg.models.text_encoders import TEXT_ENCODER_KINDS, build_text_encoder

    for kind in output_folders:
        if kind not in TEXT_ENCODER_KINDS:
            raise ValueError(f"output_folders: unknown encoder kind {kind!r}; expected one of {TEXT_ENCODER_KINDS}")
        if kind not in encoder_paths or kind not in max_lengths:
            raise ValueError(f"encoder_paths and max_lengths need an entry for {kind!r}")
    counts = cache_text_embeddings(
        csv_path, output_folders, lambda kind: build_text_encoder(kind, encoder_paths[kind], max_lengths[kind]),
        video_folder=video_folder, target_fps=target_fps, frame_stride=frame_stride, batch_size=batch_size,
        rank=rank, world_size=world_size)
    logging.getLogger("cache_text_embeddings").info("done: %s", counts)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    auto_cli(main, as_positional=False)
