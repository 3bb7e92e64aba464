"""TAE configuration and presets."""
from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class TAEConfig:
    """Sizes of the temporal autoencoder.

    Every level but the last halves H, W and T, so 4 levels give the 8x8x8 compression. The defaults are the common
    16-channel image VAE layout (diffusers AutoencoderKL: base 128, multipliers 1,2,4,4, 2 ResNet blocks per level,
    attention in the middle block), so image-VAE weights can be inflated into it.
    """
    in_channels: int = 3
    latent_channels: int = 16
    base_channels: int = 128
    channel_multipliers: tuple = (1, 2, 4, 4)
    num_res_blocks: int = 2
    norm_groups: int = 32
    use_quant_conv: bool = False      # the 1x1 quant_conv/post_quant_conv of SD1/SDXL-style VAEs (absent in SD3/FLUX)
    scaling_factor: float = 1.0       # scale_latent(z) = (z - shift_factor) * scaling_factor
    shift_factor: float = 0.0
    tile_frames: int = 32             # temporal tiling: frames per tile (encoder, no overlap; decoder, with overlap)
    tile_overlap_frames: int = 16     # decoder tiles overlap by this many frames, blended with linear ramps

    def __post_init__(self):
        object.__setattr__(self, "channel_multipliers", tuple(self.channel_multipliers))
        if len(self.channel_multipliers) < 1:
            raise ValueError("TAEConfig.channel_multipliers must not be empty")
        widths = [self.base_channels * m for m in self.channel_multipliers]
        if any(w % self.norm_groups for w in widths):
            raise ValueError(f"TAEConfig: every width {widths} must be divisible by norm_groups={self.norm_groups}")
        step = self.temporal_compression
        if self.tile_frames % step or self.tile_overlap_frames % step:
            raise ValueError(f"TAEConfig: tile_frames={self.tile_frames} and tile_overlap_frames="
                             f"{self.tile_overlap_frames} must be multiples of the temporal compression {step}")
        if not 0 <= self.tile_overlap_frames < self.tile_frames:
            raise ValueError("TAEConfig: need 0 <= tile_overlap_frames < tile_frames")

    @property
    def temporal_compression(self):
        return 2 ** (len(self.channel_multipliers) - 1)

    spatial_compression = temporal_compression

    def to_dict(self):
        d = asdict(self)
        d["channel_multipliers"] = list(self.channel_multipliers)
        return d

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"TAEConfig: unknown keys {unknown}")
        return cls(**d)


_PRESETS = {
    "default": {},
    "small": dict(base_channels=32, channel_multipliers=(1, 2, 4, 4), num_res_blocks=1, norm_groups=8),
    "tiny": dict(base_channels=8, channel_multipliers=(1, 2, 2, 2), num_res_blocks=1, norm_groups=4),
}


def tae_config(name="default", **overrides):
    """A preset ("default" = 16-channel image-VAE layout, "small", "tiny") with optional field overrides."""
    if name not in _PRESETS:
        raise ValueError(f"unknown TAE preset {name!r}; choose one of {sorted(_PRESETS)}")
    return TAEConfig(**{**_PRESETS[name], **overrides})
