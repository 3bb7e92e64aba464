"""Temporal tiling plans and linear-ramp blending for decoding long videos tile by tile."""
import numpy as np


def decode_tiles(latent_frames, tile, overlap):
    """Start/stop latent indices of decoder tiles of `tile` latent frames overlapping by `overlap`.

    Consecutive tiles overlap by exactly `overlap` latent frames; only the last tile may be shorter.
    """
    if latent_frames <= tile:
        return [(0, latent_frames)]
    stride = tile - overlap
    starts = range(0, latent_frames - overlap, stride)
    return [(s, min(s + tile, latent_frames)) for s in starts]


def blend_weights(length, ramp_in, ramp_out):
    """Per-frame weights of one tile: a linear ramp up over its first `ramp_in` frames and down over its last
    `ramp_out`. Ramps of the same length from neighbouring tiles sum to exactly 1 frame by frame."""
    w = np.ones(length, np.float32)
    if ramp_in:
        w[:ramp_in] = np.arange(1, ramp_in + 1, dtype=np.float32) / (ramp_in + 1)
    if ramp_out:
        w[length - ramp_out:] = np.arange(ramp_out, 0, -1, dtype=np.float32) / (ramp_out + 1)
    return w
