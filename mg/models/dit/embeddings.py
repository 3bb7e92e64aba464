"""Inputs of the transformer: patchify, factorized positional tables, timestep embedding and the text projector."""
import math

import mindspore as ms
import numpy as np
from mindspore import Parameter, mint, nn, ops
from mindspore.common.initializer import HeUniform, Normal, Uniform, Zero, initializer

from mg.backends import linear, permute
from mg.models.dit.layers import Linear

# Per-element std of each positional table at initialisation: the three tables together then weigh about as much as
# a patch token (elements of std ~0.6-0.75). With the common 0.02 a token's position started ~17x weaker than its
# noise at t = 0 (still ~6x after the toy's training), and the toy model's samples ignored where and when a prompt
# puts things: the direction of motion.
POSITION_INIT_STD = 0.5


class PatchProjection(nn.Cell):
    """The patch embedding's parameters in Conv3d layout (the checkpoints' layout): weight (D, C, pt, ph, pw), bias
    (D,), with Conv3d's default initialisation (`zero`: a zero weight and no bias)."""

    def __init__(self, in_channels, dim, patch_size, zero=False):
        super().__init__()
        fan_in = in_channels * int(np.prod(patch_size))
        init = Zero() if zero else HeUniform(negative_slope=math.sqrt(5))
        self.weight = Parameter(initializer(init, (dim, in_channels, *patch_size), ms.float32), name="weight")
        self.bias = None if zero else Parameter(initializer(Uniform(1 / math.sqrt(fan_in)), (dim,), ms.float32),
                                                name="bias")


class PatchEmbed3D(nn.Cell):
    """(B, C, T, H, W) latents -> (B, N, D) tokens: every pt x ph x pw patch through one linear map.

    That is a convolution whose kernel equals its stride, computed as reshape + matmul: on CPU ~30x faster than
    MindSpore's Conv3D kernel for the toy model's batch (tools/benchmark_patch_embed.py, docs/performance.md)."""

    def __init__(self, in_channels, dim, patch_size=(1, 2, 2), zero=False):
        super().__init__()
        self.patch_size = tuple(patch_size)
        self.proj = PatchProjection(in_channels, dim, self.patch_size, zero)

    def construct(self, x):
        b, c, t, h, w = x.shape
        pt, ph, pw = self.patch_size
        x = permute(x.reshape(b, c, t // pt, pt, h // ph, ph, w // pw, pw), (0, 2, 4, 6, 1, 3, 5, 7))
        weight = self.proj.weight.reshape(self.proj.weight.shape[0], -1)
        return linear(x.reshape(b, -1, weight.shape[1]).astype(weight.dtype), weight, self.proj.bias)


def unpatchify(tokens, grid, patch_size, channels):
    """(B, N, pt*ph*pw*C) -> (B, C, T, H, W): the inverse of patchify's token layout."""
    (gt, gh, gw), (pt, ph, pw) = grid, patch_size
    b = tokens.shape[0]
    x = tokens.reshape(b, gt, gh, gw, pt, ph, pw, channels)
    x = permute(x, (0, 7, 1, 4, 2, 5, 3, 6))
    return x.reshape(b, channels, gt * pt, gh * ph, gw * pw)


class FactorizedPositionEmbedding(nn.Cell):
    """Learnable tables for the t, h and w coordinates of the patch grid; a token's embedding is their sum."""

    def __init__(self, dim, max_t, max_h, max_w):
        super().__init__()
        self.table_t = Parameter(initializer(Normal(POSITION_INIT_STD), (max_t, dim), ms.float32), name="table_t")
        self.table_h = Parameter(initializer(Normal(POSITION_INIT_STD), (max_h, dim), ms.float32), name="table_h")
        self.table_w = Parameter(initializer(Normal(POSITION_INIT_STD), (max_w, dim), ms.float32), name="table_w")

    def construct(self, grid):
        gt, gh, gw = grid
        if gt > self.table_t.shape[0] or gh > self.table_h.shape[0] or gw > self.table_w.shape[0]:
            raise ValueError(f"patch grid (t, h, w) = {grid} exceeds the positional tables "
                             f"({self.table_t.shape[0]}, {self.table_h.shape[0]}, {self.table_w.shape[0]}); "
                             "build the model with larger max_t/max_h/max_w or expand the tables")
        pe = (self.table_t[:gt][:, None, None, :] + self.table_h[:gh][None, :, None, :]
              + self.table_w[:gw][None, None, :, :])
        return pe.reshape(1, gt * gh * gw, -1)


def interpolate_table(table, length):
    """Stretch a (L, D) positional table to `length` rows by linear interpolation, keeping both end rows."""
    table = np.asarray(table)
    old = table.shape[0]
    if old == 1:
        return np.repeat(table, length, axis=0)
    pos = np.linspace(0, old - 1, length)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, old - 1)
    frac = (pos - lo)[:, None].astype(table.dtype)
    return table[lo] * (1 - frac) + table[hi] * frac


def extend_table(table, length, seed=0):
    """Extend a (L, D) table to `length` rows keeping the existing rows; new rows are drawn afresh, as a new table's
    rows are (the paper adds "new temporal PE layers"). Copies of the last row would leave the new frames
    indistinguishable from it, which the toy model resolved too slowly: its samples stayed static."""
    table = np.asarray(table)
    rng = np.random.default_rng(seed)
    extra = rng.normal(0.0, POSITION_INIT_STD, (length - table.shape[0], table.shape[1])).astype(table.dtype)
    return np.concatenate([table, extra], axis=0)


# How the spatial tables grow for the next stage:
# - "extend" (the default) keeps every learned row where it is and adds fresh rows: for a stage at the same
#   resolution, such as the paper's stage 2 (256 px, larger tables for more aspect ratios), so an image of the
#   earlier stage's size gets exactly the positions it was trained with;
# - "interpolate" stretches the table over the new length (keeping both end rows): for a stage at a higher
#   resolution, such as stage 3 (768 px, 3x), so a position keeps the embedding of the same relative place.
# The temporal table always extends (stage 1 trains on images only; stage 2 adds frames).
SPATIAL_GROWTH = ("extend", "interpolate")


def expand_position_tables(params, max_t, max_h, max_w, spatial="extend", prefix="pos_embed."):
    """Grow the positional tables in a parameter dict for the next training stage (returns a new dict); `spatial`
    is one of SPATIAL_GROWTH. Shrinking a table is refused."""
    if spatial not in SPATIAL_GROWTH:
        raise ValueError(f"spatial table growth must be one of {SPATIAL_GROWTH}, got {spatial!r}")
    out = dict(params)
    for seed, (axis, length) in enumerate((("t", max_t), ("h", max_h), ("w", max_w))):
        name = f"{prefix}table_{axis}"
        if name not in params:
            raise KeyError(f"positional table '{name}' is missing from the checkpoint")
        table = np.asarray(params[name])
        if length < table.shape[0]:
            raise ValueError(f"cannot shrink '{name}' from {table.shape[0]} to {length} rows")
        if length > table.shape[0]:
            stretch = axis != "t" and spatial == "interpolate"
            # a seed per axis: the new rows of the height and width tables must differ
            out[name] = interpolate_table(table, length) if stretch else extend_table(table, length, seed)
    return out


def timestep_frequencies(t, dim, max_period=10000.0):
    """Sinusoidal features of t in [0, 1] (scaled to [0, 1000] like diffusion timesteps): (B,) -> (B, dim)."""
    half = dim // 2
    freqs = ms.Tensor(np.exp(-math.log(max_period) * np.arange(half, dtype=np.float32) / half))
    args = (t.astype(ms.float32) * 1000.0)[:, None] * freqs[None, :]
    return mint.cat([mint.cos(args), mint.sin(args)], dim=-1)


class TimestepEmbedder(nn.Cell):
    """t -> sinusoidal features -> MLP -> (B, D)."""

    def __init__(self, dim, frequency_dim=256):
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.SequentialCell(Linear(frequency_dim, dim), nn.SiLU(), Linear(dim, dim))

    def construct(self, t):
        return self.mlp(timestep_frequencies(t, self.frequency_dim))


class EncoderProjection(nn.Cell):
    """Linear + LayerNorm from one text encoder's width to the model width (LayerNorm in fp32)."""

    def __init__(self, in_dim, dim):
        super().__init__()
        self.linear = Linear(in_dim, dim)
        self.norm = nn.LayerNorm((dim,), epsilon=1e-6)

    def construct(self, x):
        h = self.linear(x)
        return self.norm(h.astype(ms.float32)).astype(h.dtype)


class TextProjector(nn.Cell):
    """Projects each encoder's embedding to the model width and concatenates them (and their masks) along the
    sequence, in the order the encoders are configured."""

    def __init__(self, encoder_dims, dim):
        super().__init__()
        if not encoder_dims:
            raise ValueError("the transformer needs at least one text encoder (text_encoders is empty)")
        self.encoder_names = tuple(encoder_dims)
        self.projections = nn.CellList([EncoderProjection(d, dim) for d in encoder_dims.values()])

    def construct(self, text_embs, text_masks):
        if len(text_embs) != len(self.projections) or len(text_masks) != len(self.projections):
            raise ValueError(f"expected an embedding and a mask for each text encoder {self.encoder_names}, "
                             f"got {len(text_embs)} embeddings and {len(text_masks)} masks")
        contexts, masks = [], []
        for i, proj in enumerate(self.projections):
            contexts.append(proj(text_embs[i]))
            masks.append(text_masks[i].astype(ms.float32))
        return mint.cat(contexts, dim=1), mint.cat(masks, dim=1)


TASK_TOKEN_INIT_STD = 0.02  # DiT practice for learned embeddings


class TaskEmbedding(nn.Cell):
    """A learned embedding per task (e.g. an editing task): `tokens` context tokens appended after the text, and a
    vector added to the timestep embedding (zero-initialised, so adding a task starts from the model's timestep
    behaviour)."""

    def __init__(self, num_tasks, dim, tokens):
        super().__init__()
        self.tokens = Parameter(initializer(Normal(TASK_TOKEN_INIT_STD), (num_tasks, tokens, dim), ms.float32),
                                name="tokens")
        self.vector = Parameter(initializer(Zero(), (num_tasks, dim), ms.float32), name="vector")

    def construct(self, task):
        """(B,) task indices -> ((B, tokens, D) context tokens, (B, D) timestep vector)."""
        return ops.gather(self.tokens, task, 0), ops.gather(self.vector, task, 0)

