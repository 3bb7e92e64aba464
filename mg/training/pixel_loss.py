"""Pixel-space supervision for post-training (Zhang et al. 2024, "Pixel-space post-training of latent diffusion
models"): besides the flow-matching loss on latents, the one-step estimate of the clean latent is decoded by the
frozen TAE decoder and compared with the real frames, so the transformer is trained on what the viewer sees, not
only on the latent the decoder is given.

    loss = latent MSE + weight * mean over samples with t >= min_t of MSE(decode(estimate of X1), frames)

Samples nearer noise (t < min_t) add no pixel term: their one-step estimate is a blurred mean of the videos the
prompt allows, and pulling its decoding towards one real video would fight the flow-matching target.
"""
from dataclasses import dataclass

import mindspore as ms
from mindspore import mint

from mg.training.train_step import FlowMatchingTrainStep


@dataclass
class PixelLossSettings:
    """``pixel_loss`` (train.py): the pixel-space term of post-training (off at weight 0).

    Args:
        weight: multiplies the pixel MSE (frames in [-1, 1]) added to the latent MSE.
        min_t: samples with a smaller t (nearer noise) get no pixel term.
    """
    weight: float = 0.0
    min_t: float = 0.5

    def __post_init__(self):
        if self.weight < 0:
            raise ValueError(f"pixel_loss.weight must be >= 0, got {self.weight}")
        if not 0.0 <= self.min_t < 1.0:
            raise ValueError(f"pixel_loss.min_t must be in [0, 1), got {self.min_t}")


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

    def loss(self, x1, x0, t, text_embs, text_masks, frames, *condition):
        latent_loss, estimate = self.flow.loss_and_estimate(self.model, x1, x0, t, text_embs, text_masks,
                                                            *condition)
        decoded = self.tae.decode(estimate / self.scale + self.shift, frames.shape[2])
        per_sample = mint.mean(mint.square(decoded - frames).reshape(frames.shape[0], -1), dim=1)
        kept = (t >= self.settings.min_t).astype(per_sample.dtype)
        pixel_loss = mint.sum(per_sample * kept) / mint.clamp(mint.sum(kept), min=1.0)
        return latent_loss + self.settings.weight * pixel_loss

    def targets(self, batch):
        return (ms.Tensor(batch["video"].astype("float32")),)
