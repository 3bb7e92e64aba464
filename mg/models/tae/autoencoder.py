"""The temporal autoencoder: an image VAE (diffusers AutoencoderKL layout) inflated to 2.5-D.

Time convention. Each of the 3 downsampling levels applies a stride-2, k=3 temporal conv with symmetric replicate
padding, which maps T frames to ceil(T / 2); so a T-frame video gives ceil(T / 8) latent frames (an image, T=1, gives
one) with no explicit padding. The decoder upsamples every latent frame to 8 frames (nearest + conv) and keeps the
first `num_frames` of the 8 * T' it produces: the caller passes the length it wants, which must satisfy
ceil(num_frames / 8) == T'. Latent frame j is centred on input frame 8j and decodes to frames 8j..8j+7.
Spatially H and W are padded (replicating the last row/column) up to multiples of 8 and cropped back after decoding.

Layout. The public methods take and return channels-first tensors (B, C, T, H, W), the layout of videos and latents
everywhere else in the project; inside, the encoder and decoder run channels-last (B, T, H, W, C), which makes every
convolution one gather + one matmul on CPU (see conv.py).
"""
import dataclasses
import math

import numpy as np
from mindspore import Tensor, mint, nn, ops

from mg.backends import split_equal
from mg.models.tae.config import TAEConfig
from mg.models.tae.conv import SpatialConv, to_channels_first, to_channels_last
from mg.models.tae.layers import Conv25d, Downsample, GroupNorm, MidBlock, ResnetBlock, Upsample
from mg.models.tae.tiling import blend_weights, decode_tiles


class _DownBlock(nn.Cell):
    def __init__(self, in_channels, out_channels, num_res_blocks, groups, downsample):
        super().__init__()
        self.resnets = nn.CellList([ResnetBlock(in_channels if i == 0 else out_channels, out_channels, groups)
                                    for i in range(num_res_blocks)])
        self.downsamplers = nn.CellList([Downsample(out_channels)]) if downsample else None

    def construct(self, x):
        for resnet in self.resnets:
            x = resnet(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
        return x


class _UpBlock(nn.Cell):
    def __init__(self, in_channels, out_channels, num_res_blocks, groups, upsample):
        super().__init__()
        self.resnets = nn.CellList([ResnetBlock(in_channels if i == 0 else out_channels, out_channels, groups)
                                    for i in range(num_res_blocks + 1)])
        self.upsamplers = nn.CellList([Upsample(out_channels)]) if upsample else None

    def construct(self, x):
        for resnet in self.resnets:
            x = resnet(x)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


class Encoder(nn.Cell):
    """Video (B, T, H, W, 3) -> moments (B, ceil(T/8), H/8, W/8, 2 * latent_channels), channels-last."""

    def __init__(self, cfg: TAEConfig):
        super().__init__()
        widths = [cfg.base_channels * m for m in cfg.channel_multipliers]
        self.conv_in = Conv25d(cfg.in_channels, widths[0])
        self.down_blocks = nn.CellList([
            _DownBlock(widths[max(i - 1, 0)], w, cfg.num_res_blocks, cfg.norm_groups, i < len(widths) - 1)
            for i, w in enumerate(widths)])
        self.mid_block = MidBlock(widths[-1], cfg.norm_groups)
        self.conv_norm_out = GroupNorm(cfg.norm_groups, widths[-1])
        self.conv_out = Conv25d(widths[-1], 2 * cfg.latent_channels)

    def set_logvar_bias(self, value):
        """Start the posterior log-variance at `value` (the output bias of its channels). With a tiny KL weight a
        from-scratch VAE starting at std 1 decodes noise-drowned latents for a long time (colour is lost first)."""
        bias = self.conv_out.spatial.bias
        values = bias.asnumpy().copy()
        values[values.size // 2:] = value
        bias.set_data(Tensor(values))

    def construct(self, x):
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(mint.nn.functional.silu(self.conv_norm_out(x)))


class Decoder(nn.Cell):
    """Latent (B, T', h, w, latent_channels) -> video (B, 8 T', 8 h, 8 w, 3), channels-last."""

    def __init__(self, cfg: TAEConfig):
        super().__init__()
        self.temporal_compression = cfg.temporal_compression
        widths = [cfg.base_channels * m for m in reversed(cfg.channel_multipliers)]
        self.conv_in = Conv25d(cfg.latent_channels, widths[0])
        self.mid_block = MidBlock(widths[0], cfg.norm_groups)
        self.up_blocks = nn.CellList([
            _UpBlock(widths[max(i - 1, 0)], w, cfg.num_res_blocks, cfg.norm_groups, i < len(widths) - 1)
            for i, w in enumerate(widths)])
        self.conv_norm_out = GroupNorm(cfg.norm_groups, widths[-1])
        self.conv_out = Conv25d(widths[-1], cfg.in_channels)

    def construct(self, z):
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        x = self.conv_out(mint.nn.functional.silu(self.conv_norm_out(x)))
        if z.shape[1] == 1:  # a single latent frame decodes static, as one frame (TemporalConv): repeat it
            b, _, h, w, c = x.shape
            x = mint.broadcast_to(x, (b, self.temporal_compression, h, w, c))
        return x


class TemporalAutoencoder(nn.Cell):
    """8x8x8 video autoencoder with a diagonal-Gaussian latent; see the module docstring for the time convention."""

    def __init__(self, config: TAEConfig = None):
        super().__init__()
        self.config = config or TAEConfig()
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)
        c2 = 2 * self.config.latent_channels
        self.quant_conv = SpatialConv(c2, c2, 1) if self.config.use_quant_conv else None
        c = self.config.latent_channels
        self.post_quant_conv = SpatialConv(c, c, 1) if self.config.use_quant_conv else None

    # ---- lengths -------------------------------------------------------------------------------------------------
    def latent_frames(self, num_frames):
        return math.ceil(num_frames / self.config.temporal_compression)

    # ---- encode --------------------------------------------------------------------------------------------------
    def encode(self, x, tiled=False):
        """x (B, 3, T, H, W) in [-1, 1] -> (mean, logvar), each (B, latent_channels, ceil(T/8), ceil(H/8), ceil(W/8)).

        With tiled=True the video is encoded in tiles of `tile_frames` frames without overlap (bounded memory).
        """
        if x.ndim != 5 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"TAE.encode expects (B, {self.config.in_channels}, T, H, W), got {tuple(x.shape)}")
        x = self._pad_spatial(x)
        step = self.config.tile_frames
        if tiled and x.shape[2] > step:
            moments = mint.cat([self._encode_moments(x[:, :, s:s + step]) for s in range(0, x.shape[2], step)], dim=2)
        else:
            moments = self._encode_moments(x)
        mean, logvar = split_equal(moments, 2, axis=1)
        return mean, mint.clamp(logvar, -30.0, 20.0)

    def _encode_moments(self, x):
        moments = self.encoder(to_channels_last(x))
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        return to_channels_first(moments)

    def _pad_spatial(self, x):
        f = self.config.spatial_compression
        ph, pw = -x.shape[3] % f, -x.shape[4] % f
        if ph or pw:
            x = ops.pad(x, (0, pw, 0, ph, 0, 0), mode="replicate")
        return x

    # ---- decode --------------------------------------------------------------------------------------------------
    def decode(self, z, num_frames, tiled=False, size=None):
        """z (B, latent_channels, T', h, w) -> video (B, 3, num_frames, H, W) with ceil(num_frames / 8) == T'.

        `size` = (H, W) crops the output to the input's size when it was not a multiple of 8 (default 8h x 8w).
        With tiled=True latent tiles of tile_frames / 8 frames overlapping by tile_overlap_frames / 8 are decoded
        one by one and blended with linear ramps over the overlap.
        """
        if z.ndim != 5 or z.shape[1] != self.config.latent_channels:
            raise ValueError(f"TAE.decode expects (B, {self.config.latent_channels}, T', h, w), got {tuple(z.shape)}")
        if self.latent_frames(num_frames) != z.shape[2]:
            raise ValueError(f"TAE.decode: num_frames={num_frames} needs {self.latent_frames(num_frames)} latent "
                             f"frames, got {z.shape[2]}")
        f = self.config.temporal_compression
        tile, overlap = self.config.tile_frames // f, self.config.tile_overlap_frames // f
        plan = decode_tiles(z.shape[2], tile, overlap) if tiled else [(0, z.shape[2])]
        if len(plan) == 1:
            video = self._decode_frames(z)
        else:
            video = None
            weight_sum = np.zeros(z.shape[2] * f, np.float32)
            for i, (start, stop) in enumerate(plan):
                frames = self._decode_frames(z[:, :, start:stop])
                w = blend_weights(frames.shape[2], overlap * f if i > 0 else 0,
                                  overlap * f if i < len(plan) - 1 else 0)
                weight_sum[start * f:stop * f] += w
                part = frames * Tensor(w).reshape(1, 1, -1, 1, 1)
                pad = (0, 0, 0, 0, start * f, (z.shape[2] - stop) * f)
                video = ops.pad(part, pad) if video is None else video + ops.pad(part, pad)
            video = video / Tensor(weight_sum).reshape(1, 1, -1, 1, 1)
        video = video[:, :, :num_frames]
        if size is not None:
            video = video[:, :, :, :size[0], :size[1]]
        return video

    def _decode_frames(self, z):
        z = to_channels_last(z)
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return to_channels_first(self.decoder(z))

    # ---- latents -------------------------------------------------------------------------------------------------
    def sample(self, mean, logvar):
        """A draw from N(mean, exp(logvar)) (reparameterised, differentiable)."""
        return mean + mint.exp(0.5 * logvar) * ops.standard_normal(mean.shape).astype(mean.dtype)

    def scale_latent(self, z):
        """(z - shift) * scale: the normalised latents the DiT is trained on."""
        return (z - self.config.shift_factor) * self.config.scaling_factor

    def unscale_latent(self, z):
        return z / self.config.scaling_factor + self.config.shift_factor

    def fit_latent_scale(self, videos):
        """Set shift_factor and scaling_factor to the mean and 1 / std over every element of the posterior means of
        `videos` (an iterable of (B, 3, T, H, W) arrays), so that scale_latent gives the DiT zero-mean, unit-variance
        latents, the scale its flow-matching noise has. A TAE trained from scratch needs this: its raw latents can
        spread over +-20. Returns the new config."""
        total = squares = count = 0.0
        for x in videos:
            mean = self.encode(Tensor(np.asarray(x, np.float32)))[0].asnumpy().astype(np.float64)
            total, squares, count = total + mean.sum(), squares + (mean * mean).sum(), count + mean.size
        if not count:
            raise ValueError("fit_latent_scale: no videos given")
        shift = total / count
        std = math.sqrt(max(squares / count - shift * shift, 0.0))
        if std == 0.0:
            raise ValueError("fit_latent_scale: the latents are constant; cannot scale them")
        self.config = dataclasses.replace(self.config, shift_factor=float(shift), scaling_factor=float(1.0 / std))
        return self.config

    def construct(self, x, sample_posterior=True):
        """Training forward: returns (reconstruction, mean, logvar) for x (B, 3, T, H, W)."""
        mean, logvar = self.encode(x)
        z = self.sample(mean, logvar) if sample_posterior else mean
        return self.decode(z, x.shape[2], size=x.shape[3:]), mean, logvar
