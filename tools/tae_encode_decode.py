"""Videos <-> TAE latents.

    # videos (or images) -> one latent file per input, in the latent-cache format (mean and std, docs/data.md)
    python tools/tae_encode_decode.py encode --tae_checkpoint tae.safetensors --inputs [a.mp4,b.png] \
        --output_folder latents [--height 256 --width 256] [--max_frames 64] [--tiled true]
    # latent files -> mp4 (or PNG for one frame) with the length, size and FPS recorded at encoding
    python tools/tae_encode_decode.py decode --tae_checkpoint tae.safetensors --inputs [latents/a.mp4.safetensors] \
        --output_folder decoded
"""
import logging
import os
from pathlib import Path
from typing import List, Optional

import mg  # noqa: F401  (quiet logging before mindspore loads)
import mindspore as ms
import numpy as np
from jsonargparse import CLI
from tqdm import tqdm

from mg.data.latent_cache import latent_path, load_latent, read_latent_header, save_latent
from mg.data.transforms import resize_center_crop, to_model_range
from mg.data.video_io import probe, read_frames
from mg.models.tae import load_tae
from mg.models.tae.media import to_uint8_frames, write_video

_logger = logging.getLogger("tae_encode_decode")


def _check_free(path, overwrite):
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite true to replace it")


def encode(tae_checkpoint: str, inputs: List[str], output_folder: str, height: Optional[int] = None,
           width: Optional[int] = None, max_frames: Optional[int] = None, tiled: bool = True,
           overwrite: bool = False):
    """Encode videos/images to latent files `<output_folder>/<input name>.safetensors`.

    Args:
        tae_checkpoint: TAE weights (safetensors with the sidecar JSON written by save_tae).
        inputs: video or image files.
        output_folder: where latent files go.
        height: resize + centre-crop to this height (with width); default: the file's own size.
        width: see height.
        max_frames: encode at most this many leading frames.
        tiled: encode in temporal tiles (bounded memory for long videos).
        overwrite: replace existing latent files.
    """
    if (height is None) != (width is None):
        raise ValueError("--height and --width go together")
    tae = load_tae(tae_checkpoint)
    tae.set_train(False)
    for video in tqdm(inputs, desc="encode", unit="video"):
        out = latent_path(output_folder, Path(video).name)
        _check_free(out, overwrite)
        info = probe(video)
        count = min(info.num_frames, max_frames) if max_frames else info.num_frames
        frames = read_frames(video, np.arange(count))
        if height is not None:
            frames = resize_center_crop(frames, height, width)
        mean, logvar = tae.encode(ms.Tensor(to_model_range(frames)[None]), tiled=tiled)
        save_latent(out, mean.asnumpy()[0], np.exp(0.5 * logvar.asnumpy()[0]), video, info.fps, len(frames),
                    frames.shape[1], frames.shape[2])
        _logger.info("%s -> %s %s", video, out, tuple(mean.shape))


def decode(tae_checkpoint: str, inputs: List[str], output_folder: str, tiled: bool = True, overwrite: bool = False):
    """Decode latent files (their mean) to `<output_folder>/<video name>.mp4` (.png for a single frame).

    Args:
        tae_checkpoint: TAE weights (safetensors with the sidecar JSON written by save_tae).
        inputs: latent files written by `encode` or tools/cache_tae_latents.py.
        output_folder: where videos go.
        tiled: decode in overlapping temporal tiles (bounded memory for long videos).
        overwrite: replace existing videos.
    """
    tae = load_tae(tae_checkpoint)
    tae.set_train(False)
    for latent_file in tqdm(inputs, desc="decode", unit="video"):
        _, meta = read_latent_header(latent_file)
        frames, size = int(meta["frames"]), (int(meta["height"]), int(meta["width"]))
        name = Path(meta["video"]).stem + (".png" if frames == 1 else ".mp4")
        out = Path(output_folder) / name
        _check_free(out, overwrite)
        mean, _ = load_latent(latent_file)
        video = tae.decode(ms.Tensor(mean[None]), frames, tiled=tiled, size=size).asnumpy()[0]
        write_video(out, to_uint8_frames(video), float(meta["fps"]))
        _logger.info("%s -> %s", latent_file, out)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    CLI([encode, decode], as_positional=False)
