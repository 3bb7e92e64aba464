"""The memory plan: the bytes one device holds to train a configuration, worked out from the configuration and the
parallel layout alone, before anything is built or launched.

    weights        this rank's parameters: fp32 master weights, TP pieces, ZeRO-3 slices (from `shard_plan`)
    gradients      one fp32 gradient per local parameter (MindSpore's backward returns them whole, whatever the stage)
    optimizer      AdamW's two moments of what this rank updates (ZeRO >= 1: its 1/dp flat slices, plus the fp32
                   copy of those slices that stages 1 and 2 update before gathering them back)
    accumulation   fp32 gradient sums, when gradient_accumulation_steps > 1: whole local gradients, or with ZeRO-2
                   this rank's 1/dp slices
    ema            the EMA's fp32 shadows of what this rank updates (sharded like the optimizer state)
    weight copies  weights the backward keeps in another form: ZeRO-3's gathered weights, and with bf16 compute
                   every weight's bf16 copy (fewer with recompute, which makes them again in the backward)
    activations    what the forward keeps for the backward (every block's, or only its inputs with recompute),
                   the stem and head, and the working set of the backward of one block
    construction   host memory while the model is built: this rank's pieces and one whole parameter at a time
    checkpoint     what this rank writes per checkpoint: the 1/dp slices of its weights, AdamW moments and EMA

The first four and the EMA are the tensors the code allocates, counted exactly (tests compare them with a built
model, optimizer and train step). Activations are counted from the tensors each operation of a block keeps
for its backward, on the path the device runs (`kernels`: "plain" on CPU, "fused" on Ascend); on CPU they are
compared with the measured growth of a step (docs/training.md, "Planning memory").
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from mg.backends.mha import CHUNK_SCORES
from mg.backends.ssd import CHUNK as SCAN_CHUNK
from mg.models.dit import MovieGenDiT
from mg.parallel.layers import flat_shard_length
from mg.parallel.parallelize import shard_plan

GIB = 2 ** 30
COMPUTE_BYTES = {"fp32": 4, "bf16": 2}
LATENT_COMPRESSION = (8, 8, 8)  # the TAE's (time, height, width) compression


@dataclass(frozen=True)
class Layout:
    """The parallel layout of one training run (the `parallel` section and train.settings.zero_stage)."""
    dp: int = 1
    tp: int = 1
    cp: int = 1
    sp: bool = False
    zero_stage: int = 0

    @property
    def world(self) -> int:
        return self.dp * self.tp * self.cp


@dataclass(frozen=True)
class Workload:
    """What one device processes in a step: `batch` samples of one bucket (pixel frames x height x width) with
    `text_tokens` text tokens in all (the encoders' lengths summed), and how the step runs."""
    batch: int
    frames: int
    height: int
    width: int
    text_tokens: int
    accumulation: int = 1
    ema: bool = True
    recompute_every: int = 0
    kernels: str = "plain"  # "plain" (CPU) or "fused" (Ascend)
    compiled: bool = True  # the step runs under ms.jit (env.mode 0)

    def tokens(self, patch_size) -> int:
        """Video tokens of one sample: the latent grid divided by the patch."""
        ct, ch, cw = LATENT_COMPRESSION
        grid = (math.ceil(self.frames / ct), self.height // ch, self.width // cw)
        return int(np.prod([g // p for g, p in zip(grid, patch_size)]))


@dataclass
class MemoryPlan:
    """Bytes per device (see the module docstring); `parts` breaks the activations down."""
    weights: int
    gradients: int
    optimizer: int
    accumulation: int
    ema: int
    weight_copies: int
    activations: int
    construction: int
    checkpoint: int
    parts: dict = field(default_factory=dict)

    @property
    def device(self) -> int:
        return (self.weights + self.gradients + self.optimizer + self.accumulation + self.ema + self.weight_copies
                + self.activations)

    def lines(self) -> list[str]:
        rows = [("weights", self.weights), ("gradients", self.gradients), ("optimizer state", self.optimizer),
                ("accumulation buffers", self.accumulation), ("EMA", self.ema), ("weight copies", self.weight_copies),
                ("activations", self.activations), ("device total", self.device),
                ("host, building", self.construction), ("checkpoint, written", self.checkpoint)]
        return [f"{name:<22}{format_bytes(value):>12}" for name, value in rows]


def format_bytes(value: int) -> str:
    return f"{value / GIB:.2f} GiB" if value >= GIB else f"{value / 2 ** 20:.1f} MiB"


def _local_numel(info, dp: int) -> int:
    """Elements of the Parameter this rank holds for one parameter."""
    numel = int(np.prod(info.local_shape))
    return flat_shard_length(numel, dp) if info.zero3 else numel


def _block_activation_elements(config, layout, workload, tokens, compute_bytes):
    """Bytes one block keeps for its backward, and the bytes of its backward's working set (module docstring).

    Token counts per rank: the residual stream holds its CP shard, divided again by tp under SP; projections see
    the whole CP shard (SP gathers it first); with CP, K and V are gathered over all of a sample's tokens."""
    b, d, f = workload.batch, config.dim, config.ffn_dim
    tp, cp = layout.tp, layout.cp
    n_cp = b * tokens // cp
    n_res = n_cp // tp if layout.sp else n_cp
    heads_width, ffn_width = d // tp, f // tp
    text = b * workload.text_tokens
    fused = workload.kernels == "fused"
    # the residual stream: x + pos, three norms, two modulations, three residual sums and the three sub-layers'
    # outputs that the gated residuals keep (under TP the row-parallel outputs exist before and after their reduction)
    residual = 12 * n_res * d + (3 * n_cp * d if tp > 1 else 0) + (3 * n_cp * d if layout.sp and tp > 1 else 0)
    # attention heads: q, k, v as projected and split, the output; plain path: the scaled q, in both attentions;
    # cross-attention: q, its output, and the padding mask multiply (its tiled mask and its result)
    self_attention = (7 if fused else 8) * n_cp * heads_width
    if config.attention == "mate":  # DP/ZeRO only: MATE refuses TP and CP (docs/linear_attention.md)
        self_attention = _mate_elements(config, n_cp)
    heads = self_attention + (4 if fused else 5) * n_cp * heads_width
    gathered_kv = 2 * b * tokens * heads_width if cp > 1 else 0
    ffn = 6 * n_cp * ffn_width  # w13's output, gate and up, silu(gate), the product
    text_kv = 4 * text * heads_width  # the text's k and v as projected and split
    kept = (residual + heads + gathered_kv + ffn + text_kv) * compute_bytes
    if fused:  # flash attention's softmax statistics (fp32, 8 per row and head) and the cross-attention's drop mask
        kept += 2 * n_cp * (config.num_heads // tp) * 8 * 4 + n_cp * text
    # the backward of one block: gradients of its activations a few residual rows at a time, and on the plain path
    # one chunk of the attention's scores, probabilities, their gradient and its product with them (fp32)
    queries, keys = tokens // cp, tokens  # per sample: this rank's queries attend to every key of the sample
    scores = 0 if fused else 4 * 4 * min(CHUNK_SCORES, b * (config.num_heads // tp) * queries * keys)
    if config.attention == "mate":  # its windows' scores are among the kept tensors
        scores = 0
    working = 4 * n_res * d * compute_bytes + scores
    return kept, working


def _mate_elements(config, n):
    """Elements a MATE block's token mixer keeps for its backward over n tokens, in place of self-attention's.

    Each direction of the MA-branch: ~10 tensors of the width (the convolution's input and output, silu, x dt and
    its layout by chunk, the scan's partial and total outputs, the skip), 7 of heads x chunk per token (the shared
    C B^T repeated over heads, the decays' two repeats, difference, masked and exp, the masked scores) and 6 of
    heads x state (B and C over heads, the decay to the chunk's end and its product with B, the chunk states and
    entering states); both directions share the input projection and ~8 tensors of the width (the split, the gate,
    the sum, the gated product, the norm). TESA: q, k, v and their windows, the windows' output and its merge (~10
    of the width) and each window's scores and probabilities (2 x heads x window tokens)."""
    d, p = config.dim, config.mate_head_dim
    heads = d // p
    per_direction = 10 * d + 7 * heads * SCAN_CHUNK + 6 * heads * config.mate_state_dim
    projection = 2 * d + 2 * (2 * config.mate_state_dim + heads)
    window = int(np.prod(config.mate_window))
    tesa = 10 * d + 2 * config.num_heads * window
    return n * (2 * per_direction + projection + 8 * d + tesa)


def plan_memory(config, layout: Layout, workload: Workload) -> MemoryPlan:
    """The memory plan of training `config` (a DiTConfig) under `layout` on `workload` (see the module docstring)."""
    from mindspore.nn.utils import no_init_parameters
    with no_init_parameters():  # names and shapes only: no weights are made
        model = MovieGenDiT(config)
    infos = shard_plan(model, layout.dp, layout.tp, layout.sp, layout.zero_stage)
    local = {name: _local_numel(info, layout.dp) for name, info in infos.items()}
    params = sum(local.values())
    weights = 4 * params
    sliced_state = layout.zero_stage >= 1 and layout.dp > 1
    slices = {name: n if infos[name].zero3 else flat_shard_length(n, layout.dp) for name, n in local.items()}
    updated = sum(slices.values()) if sliced_state else params  # what this rank's AdamW updates
    if sliced_state:  # moments of this rank's slices; stages 1-2 also keep the slice of the weights they update
        optimizer = 4 * sum(2 * n if infos[name].zero3 else 3 * n for name, n in slices.items())
    else:
        optimizer = 4 * 2 * params
    optimizer += 4 + 4  # the step counter and the learning rate
    summed = sum(slices.values()) if layout.zero_stage == 2 and layout.dp > 1 else params
    accumulation = 4 * summed if workload.accumulation > 1 else 0
    largest = max(int(np.prod(info.full_shape)) for info in infos.values())

    compute_bytes = COMPUTE_BYTES[config.dtype]
    every = workload.recompute_every
    recomputed = len(range(0, config.depth, every)) if every else 0
    kept_blocks = config.depth - recomputed
    block_weights = sum(int(np.prod(info.local_shape)) for name, info in infos.items() if name.startswith("blocks."))
    other_weights = sum(int(np.prod(info.local_shape)) for name, info in infos.items()
                        if not name.startswith("blocks.") and info.zero3)
    copies_per_block = block_weights // config.depth
    # ZeRO-3 gathers a block's weights (fp32) and, with bf16 compute, casts every weight; the backward keeps the
    # copies of the blocks it does not recompute, and one block's while it recomputes it
    copy_bytes = compute_bytes if config.dtype == "bf16" else (4 if layout.zero_stage == 3 and layout.dp > 1 else 0)
    weight_copies = copy_bytes * ((kept_blocks + min(recomputed, 1)) * copies_per_block + other_weights)

    tokens = workload.tokens(config.patch_size)
    block_kept, working = _block_activation_elements(config, layout, workload, tokens, compute_bytes)
    n_res = workload.batch * tokens // layout.cp // (layout.tp if layout.sp else 1)
    recompute_kept = n_res * config.dim * compute_bytes  # a recomputed block keeps its input
    if workload.kernels == "plain" and workload.compiled and every:  # ... compiled on CPU, its attention's output
        recompute_kept += workload.batch * tokens // layout.cp * (config.dim // layout.tp) * compute_bytes
    patch_values = int(np.prod(config.patch_size)) * config.in_channels
    stem_head = workload.batch * tokens * (5 * config.dim * compute_bytes + 6 * patch_values * 4)
    blocks = kept_blocks * block_kept + recomputed * recompute_kept + (block_kept if recomputed else 0)
    activations = blocks + stem_head + working
    return MemoryPlan(weights, 4 * params, optimizer, accumulation, 4 * updated if workload.ema else 0,
                      weight_copies, activations, weights + 4 * largest,
                      4 * sum(slices.values()) * (3 + workload.ema),
                      {"per block kept": block_kept, "per recomputed block": recompute_kept, "stem and head": stem_head,
                       "backward working set": working, "tokens per sample": tokens})
