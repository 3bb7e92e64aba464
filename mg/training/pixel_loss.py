"""Pixel-space supervision for post-training (Zhang et al. 2024, "Pixel-space post-training of latent diffusion
models"): besides the flow-matching loss on latents, the one-step estimate of the clean latent is decoded by the
frozen TAE decoder and compared with the real frames, so the transformer is trained on what the viewer sees, not
only on the latent the decoder is given.

    loss = latent MSE + weight * mean over samples with t >= min_t of MSE(decode(estimate of X1), frames)

Samples nearer noise (t < min_t) add no pixel term: their one-step estimate is a blurred mean of the videos the
prompt allows, and pulling its decoding towards one real video would fight the flow-matching target.

The decoder keeps its activations at full resolution for the backward, so `window` bounds what is decoded: a piece
of every estimate (latent frames, rows, columns) at one place drawn per step, compared with the frames it covers.
A piece decodes without the latent around it, as a tile of tiled decoding does.
"""
from dataclasses import dataclass
from typing import Optional

import mindspore as ms
import numpy as np
from mindspore import mint

from mg.training.train_step import FlowMatchingTrainStep


@dataclass
class PixelLossSettings:
    """``pixel_loss`` (train.py): the pixel-space term of post-training (off at weight 0).

    Args:
        weight: multiplies the pixel MSE (frames in [-1, 1]) added to the latent MSE.
        min_t: samples with a smaller t (nearer noise) get no pixel term.
        window: (latent frames, height, width) of the piece of each estimate that is decoded, at a place drawn per
            step (null: the whole latent; a size larger than the latent is the whole of that axis).
    """
    weight: float = 0.0
    min_t: float = 0.5
    window: Optional[tuple[int, int, int]] = None

    def __post_init__(self):
        if self.weight < 0:
            raise ValueError(f"pixel_loss.weight must be >= 0, got {self.weight}")
        if not 0.0 <= self.min_t < 1.0:
            raise ValueError(f"pixel_loss.min_t must be in [0, 1), got {self.min_t}")
        if self.window is not None:
            self.window = tuple(self.window)
            if len(self.window) != 3 or not all(isinstance(n, int) and n >= 1 for n in self.window):
                raise ValueError(f"pixel_loss.window must be three positive latent sizes (frames, height, width), "
                                 f"got {list(self.window)}")


class PixelSupervisedStep(FlowMatchingTrainStep):
    """FlowMatchingTrainStep whose loss adds the pixel term. ``tae``: the frozen TAE whose decoder makes the
    pixels (its weights are not trained: only the transformer's are in the optimizer); ``settings``:
    PixelLossSettings. Batches must hold the real frames as ``video`` (mg.data.VideoDataset with pixels=True in
    latent mode, or any pixel-mode dataset)."""

    def __init__(self, model, optimizer, flow, tae, settings: PixelLossSettings, **kwargs):
        for param in tae.get_parameters():
            param.requires_grad = False
        self.tae, self.settings = tae, settings
        self.scale, self.shift = tae.config.scaling_factor, tae.config.shift_factor
        super().__init__(model, optimizer, flow, **kwargs)

    def loss(self, x1, x0, t, text_embs, text_masks, frames, frame_weights, selections, *condition):
        """`frames`: the real frames of the decoded piece (B, 3, F, H, W), the decoded length F padded past the
        clip's end with `frame_weights` (F,) 0 there, 1 elsewhere; `selections`: () for the whole latent, else the
        piece's one-hot (latent length, piece length) matrices along time, height and width."""
        latent_loss, estimate = self.flow.loss_and_estimate(self.model, x1, x0, t, text_embs, text_masks,
                                                            *condition)
        for axis, select in zip((2, 3, 4), selections):  # matmuls: a Gather's backward is slow on CPU
            estimate = mint.transpose(mint.matmul(mint.transpose(estimate, axis, 4), select), axis, 4)
        decoded = self.tae.decode(estimate / self.scale + self.shift, frames.shape[2])
        squares = mint.square(decoded - frames) * frame_weights.reshape(1, 1, -1, 1, 1)
        values_per_frame = frames.shape[1] * frames.shape[3] * frames.shape[4]
        per_sample = (mint.sum(squares.reshape(frames.shape[0], -1), dim=1)
                      / (mint.sum(frame_weights) * values_per_frame))
        kept = (t >= self.settings.min_t).astype(per_sample.dtype)
        pixel_loss = mint.sum(per_sample * kept) / mint.clamp(mint.sum(kept), min=1.0)
        return latent_loss + self.settings.weight * pixel_loss

    def targets(self, batch, rng):
        frames = np.asarray(batch["video"], np.float32)
        steps = self.tae.config.temporal_compression, self.tae.config.spatial_compression
        piece, weights, rows = pixel_window(frames, *steps, self.settings.window, rng)
        lengths = latent_grid(frames.shape, *steps)
        if all(len(r) == n for r, n in zip(rows, lengths)):
            return ms.Tensor(piece), ms.Tensor(weights), ()
        selections = tuple(ms.Tensor(np.eye(n, dtype=np.float32)[:, r]) for r, n in zip(rows, lengths))
        return ms.Tensor(piece), ms.Tensor(weights), selections


def latent_grid(video_shape, time_step, space_step):
    """(frames, rows, columns) of the latent of clips of `video_shape` (B, 3, T, H, W)."""
    return -(-video_shape[2] // time_step), video_shape[3] // space_step, video_shape[4] // space_step


def pixel_window(frames, time_step, space_step, window, rng):
    """The piece of a batch's latents that is decoded, and the real frames it covers.

    `frames` (B, 3, T, H, W) are a batch's clips, whose latents have ceil(T / time_step) frames and H / space_step x
    W / space_step cells; `window` (latent frames, rows, columns) or None (all). The piece's place is drawn from
    `rng` (the step's generator, so a resumed run draws it again). Returns the frames under the piece (B, 3,
    time_step * frames of the piece, ...), zero past the clip's end, the per-frame weights (1 on real frames, 0 on
    that padding) and the piece's latent indices along time, height and width (int32)."""
    latent = latent_grid(frames.shape, time_step, space_step)
    sizes = latent if window is None else tuple(min(w, n) for w, n in zip(window, latent))
    starts = [int(rng.integers(0, n - size + 1)) for n, size in zip(latent, sizes)]
    rows = [np.arange(start, start + size, dtype=np.int32) for start, size in zip(starts, sizes)]
    first, count = starts[0] * time_step, sizes[0] * time_step
    real = max(0, min(count, frames.shape[2] - first))
    piece = np.zeros((*frames.shape[:2], count, sizes[1] * space_step, sizes[2] * space_step), np.float32)
    top, left = starts[1] * space_step, starts[2] * space_step
    piece[:, :, :real] = frames[:, :, first:first + real, top:top + piece.shape[3], left:left + piece.shape[4]]
    weights = np.zeros(count, np.float32)
    weights[:real] = 1.0
    return piece, weights, rows
