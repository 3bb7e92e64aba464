"""Transformer configuration, the size presets of the design, and the parameter count of a configuration."""
from dataclasses import dataclass, field, fields, replace
from typing import Dict, Tuple

DEFAULT_TEXT_ENCODERS = {"ul2": 4096, "byt5": 1472, "metaclip": 1280}


@dataclass(frozen=True)
class DiTConfig:
    """Architecture of the Movie Gen transformer.

    max_t / max_h / max_w size the positional tables in patch-grid units (latent frames, latent rows / 2, latent
    columns / 2); stage configs grow them (see `expand_position_tables`). `recompute_every` = n recomputes the
    activations of every n-th block in the backward pass (0: off; on CPU only 1, see mg/models/dit/checkpoint.py).
    `dtype` is the compute dtype ("fp32" or "bf16"); parameters stay fp32.
    """

    depth: int = 2
    dim: int = 64
    ffn_dim: int = 128
    num_heads: int = 4
    in_channels: int = 16
    patch_size: Tuple[int, int, int] = (1, 2, 2)
    text_encoders: Dict[str, int] = field(default_factory=lambda: dict(DEFAULT_TEXT_ENCODERS))
    max_t: int = 32
    max_h: int = 64
    max_w: int = 64
    timestep_frequency_dim: int = 256
    norm_eps: float = 1e-6
    recompute_every: int = 0
    dtype: str = "fp32"

    def __post_init__(self):
        if self.dim % self.num_heads:
            raise ValueError(f"dim={self.dim} is not divisible by num_heads={self.num_heads}")
        if self.dtype not in ("fp32", "bf16"):
            raise ValueError(f"dtype must be 'fp32' or 'bf16', got {self.dtype!r}")
        if min(self.depth, self.dim, self.ffn_dim, self.max_t, self.max_h, self.max_w) < 1:
            raise ValueError(f"sizes must be positive: {self}")
        if not self.text_encoders:
            raise ValueError("text_encoders must name at least one encoder and its width")


# The sizes of the design's table (layers, model dimension, FFN dimension, heads), plus small ones for the toy
# world and tests.
PRESETS = {
    "30B": dict(depth=48, dim=6144, ffn_dim=16384, num_heads=48),
    "5B": dict(depth=32, dim=3072, ffn_dim=8192, num_heads=24),
    "1B": dict(depth=24, dim=1536, ffn_dim=4096, num_heads=16),
    "toy": dict(depth=4, dim=256, ffn_dim=704, num_heads=4),
    "tiny": dict(depth=2, dim=64, ffn_dim=128, num_heads=4),
}


def dit_config(preset="tiny", **overrides):
    """The configuration of a named preset, with any field overridden."""
    if preset not in PRESETS:
        raise ValueError(f"unknown transformer preset {preset!r}; choose one of {sorted(PRESETS)}")
    unknown = set(overrides) - {f.name for f in fields(DiTConfig)}
    if unknown:
        raise ValueError(f"unknown DiTConfig fields {sorted(unknown)}")
    return replace(DiTConfig(**PRESETS[preset]), **overrides)


def parameter_count(config):
    """Number of parameters of `MovieGenDiT(config)`, computed from the configuration alone."""
    d, f = config.dim, config.ffn_dim
    pt, ph, pw = config.patch_size
    patch_out = pt * ph * pw * config.in_channels
    patch_embed = config.in_channels * pt * ph * pw * d + d
    positions = (config.max_t + config.max_h + config.max_w) * d
    timestep = config.timestep_frequency_dim * d + d + d * d + d
    modulation = d * 6 * d + 6 * d
    text = sum(c * d + d + 2 * d for c in config.text_encoders.values())
    block = (3 * d                 # three RMSNorm weights
             + 4 * d * d           # self-attention: fused qkv + output
             + 4 * d * d           # cross-attention: q, fused kv, output
             + 3 * d * f           # SwiGLU
             + 6 * d)              # per-block modulation table
    final = d + d * 2 * d + 2 * d + d * patch_out + patch_out
    return patch_embed + positions + timestep + modulation + text + config.depth * block + final
