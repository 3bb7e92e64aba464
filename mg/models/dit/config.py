"""Transformer configuration, the named sizes (flavors), and the parameter count of a configuration."""
from dataclasses import dataclass, field, fields
from typing import Any, Dict, Optional, Tuple

from mg.models.clip_vision import CLIPVisionConfig
from mg.models.dit.mate import CONV_SIZE

DEFAULT_TEXT_ENCODERS = {"ul2": 4096, "byt5": 1472, "metaclip": 1280}
TASK_TOKENS = 4  # context tokens per task embedding (the paper's four)
ATTENTIONS = ("full", "mate")  # token mixers of the blocks


# The named sizes (layers, model width, FFN width, heads): the design's 1B, 5B and 30B, the toy world's shipped model
# (checkpoints/toy) and a tiny one for tests. Configs name one (`model.flavor`) and may override any size.
FLAVORS = {
    "30B": dict(depth=48, dim=6144, ffn_dim=16384, num_heads=48),
    "5B": dict(depth=32, dim=3072, ffn_dim=8192, num_heads=24),
    "1B": dict(depth=24, dim=1536, ffn_dim=4096, num_heads=16),
    "toy": dict(depth=4, dim=128, ffn_dim=352, num_heads=4),
    "tiny": dict(depth=2, dim=64, ffn_dim=128, num_heads=4),
}
SIZES = ("depth", "dim", "ffn_dim", "num_heads")


@dataclass(frozen=True)
class DiTConfig:
    """Architecture of the Movie Gen transformer.

    `flavor` names a size in FLAVORS; the sizes it gives (depth, dim, ffn_dim, num_heads) apply where the sizes are
    left unset, so a flavor can be given with some sizes changed. Without a flavor every size must be given.
    max_t / max_h / max_w size the positional tables in patch-grid units (latent frames, latent rows / 2, latent
    columns / 2); stage configs grow them (see `expand_position_tables`). `dtype` is the compute dtype ("fp32" or
    "bf16"); parameters stay fp32.

    Conditioning (Movie Gen Edit; image-to-video, continuation, inpainting): `condition_channels` latent channels
    given beside the noisy latent (a known latent and its mask, mg.data.conditions), concatenated on channels with
    zero-initialised input weights; `num_tasks` learned task embeddings, each TASK_TOKENS context tokens after the
    text and a vector added to the timestep embedding. 0 and 0: text-to-video only.

    Token mixing: `attention` "full" (self-attention) or "mate" (LinGen's MATE, linear in the tokens: docs/
    linear_attention.md) in every block; for MATE, the MA-branch's state size per head (`mate_state_dim`) and head
    size (`mate_head_dim`), the TE-branch's window in (frames, rows, columns) of the patch grid (`mate_window`), and
    `mate_review_stride` > 0 prepends review tokens (each frame average-pooled over stride x stride tiles; 0: none),
    and `mate_step_range` the (smallest, largest) initial Mamba2 step dt, log-spaced over the heads.

    Personalization: `reference_encoder`, the architecture of a CLIP vision tower (mg.models.clip_vision.
    CLIPVisionConfig fields), makes the model take a reference image of its subject: the tower's tokens, projected
    like each text encoder's (Linear + LayerNorm), follow the text in the cross-attention context. None: no reference.
    """

    flavor: Optional[str] = None
    depth: Optional[int] = None
    dim: Optional[int] = None
    ffn_dim: Optional[int] = None
    num_heads: Optional[int] = None
    in_channels: int = 16
    patch_size: Tuple[int, int, int] = (1, 2, 2)
    text_encoders: Dict[str, int] = field(default_factory=lambda: dict(DEFAULT_TEXT_ENCODERS))
    max_t: int = 32
    max_h: int = 64
    max_w: int = 64
    timestep_frequency_dim: int = 256
    norm_eps: float = 1e-6
    dtype: str = "fp32"
    condition_channels: int = 0
    num_tasks: int = 0
    reference_encoder: Optional[Dict[str, Any]] = None
    attention: str = "full"
    mate_state_dim: int = 64
    mate_head_dim: int = 64
    mate_window: Tuple[int, int, int] = (8, 2, 2)
    mate_review_stride: int = 0
    mate_step_range: Tuple[float, float] = (1e-3, 1e-1)

    def __post_init__(self):
        if self.flavor is not None:
            if self.flavor not in FLAVORS:
                raise ValueError(f"unknown transformer flavor {self.flavor!r}; choose one of {sorted(FLAVORS)}")
            for name, value in FLAVORS[self.flavor].items():
                if getattr(self, name) is None:
                    object.__setattr__(self, name, value)
        unset = [name for name in SIZES if getattr(self, name) is None]
        if unset:
            raise ValueError(f"the transformer needs a flavor ({sorted(FLAVORS)}) or all of its sizes; "
                             f"missing {unset}")
        object.__setattr__(self, "patch_size", tuple(self.patch_size))
        if self.dim % self.num_heads:
            raise ValueError(f"dim={self.dim} is not divisible by num_heads={self.num_heads}")
        if self.dtype not in ("fp32", "bf16"):
            raise ValueError(f"dtype must be 'fp32' or 'bf16', got {self.dtype!r}")
        if min(self.depth, self.dim, self.ffn_dim, self.max_t, self.max_h, self.max_w) < 1:
            raise ValueError(f"sizes must be positive: {self}")
        if not self.text_encoders:
            raise ValueError("text_encoders must name at least one encoder and its width")
        if self.condition_channels < 0 or self.num_tasks < 0:
            raise ValueError(f"condition_channels and num_tasks must be >= 0, got {self.condition_channels}, "
                             f"{self.num_tasks}")
        if self.reference_encoder is not None:
            object.__setattr__(self, "reference_encoder", reference_config(self.reference_encoder).to_dict())
        object.__setattr__(self, "mate_window", tuple(self.mate_window))
        object.__setattr__(self, "mate_step_range", tuple(self.mate_step_range))
        if self.attention not in ATTENTIONS:
            raise ValueError(f"model.attention must be one of {ATTENTIONS}, got {self.attention!r}")
        if self.attention == "mate":
            if self.dim % self.mate_head_dim:
                raise ValueError(f"model.mate_head_dim={self.mate_head_dim} must divide dim={self.dim}")
            if (len(self.mate_window) != 3 or min(self.mate_window) < 1 or self.mate_state_dim < 1
                    or self.mate_review_stride < 0):
                raise ValueError(f"MATE sizes: mate_window must be 3 positive sizes, mate_state_dim positive and "
                                 f"mate_review_stride >= 0; got {self.mate_window}, {self.mate_state_dim}, "
                                 f"{self.mate_review_stride}")
            steps = self.mate_step_range
            if len(steps) != 2 or not 0 < steps[0] <= steps[1]:
                raise ValueError(f"model.mate_step_range must be (smallest, largest) initial steps with "
                                 f"0 < smallest <= largest; got {self.mate_step_range}")


def reference_config(fields):
    """The CLIPVisionConfig of a `reference_encoder` dict, with a clear error for a bad one."""
    try:
        return CLIPVisionConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
    except (TypeError, ValueError) as err:
        raise ValueError(f"model.reference_encoder is not a CLIP vision tower configuration ({err})") from err


def mate_branch_parameters(config):
    """Parameters of a MATE block's MA-branch (mg.models.dit.mate.BidirectionalMamba2, width = dim)."""
    d, n = config.dim, config.mate_state_dim
    heads = d // config.mate_head_dim
    in_proj = d * (2 * d + 2 * (2 * n + heads))
    conv = 2 * (CONV_SIZE + 1) * (d + 2 * n)  # two directions' depthwise kernels and biases
    return in_proj + conv + 3 * 2 * heads + d + d * d  # step bias, decay, skip per direction; norm; out_proj


def dit_config(flavor="tiny", **overrides):
    """The configuration of a named flavor, with any field overridden."""
    unknown = set(overrides) - {f.name for f in fields(DiTConfig)}
    if unknown:
        raise ValueError(f"unknown DiTConfig fields {sorted(unknown)}")
    return DiTConfig(flavor=flavor, **overrides)


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
             + 4 * d * d           # self-attention (MATE: its TE-branch): fused qkv + output
             + (mate_branch_parameters(config) if config.attention == "mate" else 0)
             + 4 * d * d           # cross-attention: q, fused kv, output
             + 3 * d * f           # SwiGLU
             + 6 * d)              # per-block modulation table
    final = d + d * 2 * d + 2 * d + d * patch_out + patch_out
    conditioning = config.condition_channels * pt * ph * pw * d + config.num_tasks * (TASK_TOKENS + 1) * d
    if config.reference_encoder is not None:
        vision = reference_config(config.reference_encoder)
        conditioning += vision.parameter_count() + vision.hidden_size * d + 3 * d  # the tower and its projection
    return patch_embed + positions + timestep + modulation + text + config.depth * block + final + conditioning
