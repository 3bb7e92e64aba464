"""The Movie Gen transformer: a LLaMa3 block changed three ways (cross-attention to text, adaLN timestep
modulation, bidirectional attention), over 1x2x2 patches of TAE latents with factorized positional tables added to
the input of every block.

    latents (B, C, T, H, W) --patchify--> tokens (B, N, D)
    for each block: x += PE; x += gate1 * SelfAttn(mod1(RMSNorm(x))); x += CrossAttn(RMSNorm(x), text);
                    x += gate2 * SwiGLU(mod2(RMSNorm(x)))
    final adaLN + zero-initialised projection --unpatchify--> velocity (B, C, T, H, W)

Movie Gen Edit and pixel-conditioned generation add two inputs: a condition latent concatenated with the noisy one
on channels (its input weights zero-initialised, so a text-to-video checkpoint is the starting point), and a task
embedding: tokens after the text context and a vector added to the timestep embedding.

LinGen's MATE can take self-attention's place in every block (`config.attention`, mate.py): the blocks then get the
tokens and positions as a (B, T, H, W, D) grid.

Personalization adds a reference image of the subject: a CLIP vision tower (trained with the model) turns it into
tokens that are projected like the text encoders' and follow the text in the cross-attention context.
"""
import mindspore as ms
from mindspore import Parameter, mint, nn
from mindspore.common.initializer import Zero, initializer

from mg.backends import expand, gated_add, modulate, split_equal
from mg.models.clip_vision import CLIPVisionTransformer
from mg.models.dit.config import TASK_TOKENS, DiTConfig, reference_config
from mg.models.dit.embeddings import (EncoderProjection, FactorizedPositionEmbedding, PatchEmbed3D, TaskEmbedding,
                                      TextProjector, TimestepEmbedder, unpatchify)
from mg.models.dit.mate import MATE
from mg.models.dit.layers import CrossAttention, Linear, RMSNorm, SelfAttention, SwiGLU, zero_init_

COMPUTE_DTYPES = {"fp32": ms.float32, "bf16": ms.bfloat16}


class TransformerBlock(nn.Cell):
    """One block. `modulation` (B, 6, D) comes from the timestep; the block adds its own learned (6, D) table.

    `mixer`: what mixes the tokens in self-attention's place (default: self-attention; or LinGen's MATE, which takes
    the tokens in grid form: such a model passes `pos` as (B, T, H, W, D))."""

    def __init__(self, dim, ffn_dim, num_heads, eps, mixer=None):
        super().__init__()
        self.attn_norm = RMSNorm(dim, eps)
        self.attn = SelfAttention(dim, num_heads) if mixer is None else mixer
        self.mixer_weights = len(self.attn.weights())
        self.variant = getattr(self.attn, "variant", 0)  # blocks of one variant compute the same function of weights
        self.cross_norm = RMSNorm(dim, eps)
        self.cross_attn = CrossAttention(dim, num_heads)
        self.ffn_norm = RMSNorm(dim, eps)
        self.ffn = SwiGLU(dim, ffn_dim)
        self.modulation_table = Parameter(initializer(Zero(), (6, dim), ms.float32), name="modulation_table")

    def construct(self, x, pos, modulation, context, context_mask):
        return self.forward((x, pos, modulation, context, context_mask), self.weights())[0]

    def weights(self):
        """The block's weights in `forward`'s order, read from the current layers (parallelize may swap them)."""
        return (self.attn_norm.weight, *self.attn.weights(), self.cross_norm.weight, *self.cross_attn.weights(),
                self.ffn_norm.weight, *self.ffn.weights(), self.modulation_table)

    def forward(self, inputs, weights, attention=None):
        """The block as a function of its inputs and weights: (output, the self-attention's result). `attention`:
        that result, already computed; it is used instead of computing the attention again (recompute keeps it,
        mg/backends/recompute.py)."""
        x, pos, modulation, context, context_mask = inputs
        n = self.mixer_weights
        attn_norm, mixer = weights[0], weights[1:1 + n]
        cross_norm, cross_q, cross_kv, cross_proj, ffn_norm, w13, w2, modulation_table = weights[1 + n:]
        x = x + pos.reshape(x.shape)
        mod = modulation + modulation_table.astype(modulation.dtype)
        shift_attn, scale_attn, gate_attn, shift_ffn, scale_ffn, gate_ffn = split_equal(mod, 6, axis=1)
        h = modulate(self.attn_norm.apply(x, attn_norm), shift_attn, scale_attn)
        attn_out, attention = self.attn.apply(h.reshape(pos.shape), *mixer, attention)
        x = gated_add(x, gate_attn, attn_out)
        x = x + self.cross_attn.apply(self.cross_norm.apply(x, cross_norm), context, context_mask, cross_q,
                                      cross_kv, cross_proj)
        h = modulate(self.ffn_norm.apply(x, ffn_norm), shift_ffn, scale_ffn)
        return gated_add(x, gate_ffn, self.ffn.apply(h, w13, w2)), attention


class FinalLayer(nn.Cell):
    """adaLN-modulated norm and a zero-initialised projection to patch values."""

    def __init__(self, dim, out_dim, eps):
        super().__init__()
        self.norm = RMSNorm(dim, eps)
        self.modulation = zero_init_(Linear(dim, 2 * dim))
        self.proj = zero_init_(Linear(dim, out_dim))

    def construct(self, x, t_emb):
        shift, scale = split_equal(self.modulation(mint.nn.functional.silu(t_emb))[:, None, :], 2)
        return self.proj(modulate(self.norm(x), shift, scale))


class MovieGenDiT(nn.Cell):
    """Predicts the flow-matching velocity of latents `x` (B, C, T, H, W) at times `t` (B,) given text.

    `text_embs` / `text_masks` are tuples with one (B, L_i, C_i) embedding and one (B, L_i) mask (1 = token,
    0 = padding) per configured text encoder, in `config.text_encoders` order. With `config.condition_channels`,
    `condition` (B, condition_channels, T, H, W) is the known part of the video and its mask (None: nothing known,
    text-to-video); with `config.num_tasks`, `task` (B,) int32 picks each sample's task (None: no task tokens);
    with `config.reference_encoder`, `reference` (B, 3, S, S) in [-1, 1] is an image of the subject and
    `reference_mask` (B,) says which samples have one (1) or not (0: the reference tokens are masked).
    """

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = config
        d = config.dim
        self.compute_dtype = COMPUTE_DTYPES[config.dtype]
        self.patch_size = tuple(config.patch_size)  # plain attributes: graph mode cannot read the dataclass
        self.out_channels = config.in_channels
        self.grid_tokens = config.attention == "mate"  # MATE blocks take the tokens (and positions) as a grid
        self.patch_embed = PatchEmbed3D(config.in_channels, d, config.patch_size)
        # the condition's share of the channel concatenation [x; condition] -> tokens: a bias-free, zero-initialised
        # patch projection added to the latent's
        self.condition_embed = (PatchEmbed3D(config.condition_channels, d, config.patch_size, zero=True)
                                if config.condition_channels else None)
        self.task_embed = TaskEmbedding(config.num_tasks, d, TASK_TOKENS) if config.num_tasks else None
        self.pos_embed = FactorizedPositionEmbedding(d, config.max_t, config.max_h, config.max_w)
        self.t_embedder = TimestepEmbedder(d, config.timestep_frequency_dim)
        # One projection from the timestep embedding to the six modulation vectors, shared by all blocks.
        self.t_modulation = zero_init_(Linear(d, 6 * d))
        self.text_projector = TextProjector(config.text_encoders, d)
        if config.reference_encoder is not None:
            vision = reference_config(config.reference_encoder)
            self.reference_encoder = CLIPVisionTransformer(vision)
            self.reference_projection = EncoderProjection(vision.hidden_size, d)
        else:
            self.reference_encoder = self.reference_projection = None
        self.blocks = nn.CellList([TransformerBlock(d, config.ffn_dim, config.num_heads, config.norm_eps,
                                                    self._mixer(config, layer)) for layer in range(config.depth)])
        pt, ph, pw = config.patch_size
        self.final = FinalLayer(d, pt * ph * pw * config.in_channels, config.norm_eps)

    @staticmethod
    def _mixer(config, layer):
        """Layer `layer`'s token mixer: None (self-attention) or MATE."""
        if config.attention == "full":
            return None
        return MATE(config.dim, config.num_heads, layer, config.mate_state_dim, config.mate_head_dim,
                    config.mate_window, config.mate_review_stride, config.mate_step_range)

    def patch_grid(self, shape):
        """The (t, h, w) patch grid of a latent shape (.., T, H, W); raises if the patch does not divide it."""
        t, h, w = shape[-3:]
        pt, ph, pw = self.patch_size
        if t % pt or h % ph or w % pw:
            raise ValueError(f"latent (T, H, W) = {(t, h, w)} is not divisible by the patch size {(pt, ph, pw)}")
        return t // pt, h // ph, w // pw

    def construct(self, x, t, text_embs, text_masks, condition=None, task=None, reference=None, reference_mask=None):
        grid = self.patch_grid(x.shape)
        tokens = self.patch_embed(x)
        if condition is not None:
            tokens = tokens + self.condition_embed(condition)
        tokens = tokens.astype(self.compute_dtype)
        # repeated over the batch once here, not broadcast in every block (mg/backends/tensors.py)
        pos = expand(self.pos_embed(grid).astype(self.compute_dtype), tokens.shape)
        if self.grid_tokens:
            pos = pos.reshape(pos.shape[0], *grid, pos.shape[-1])
        t_emb = self.t_embedder(t)
        context, context_mask = self.text_projector(text_embs, text_masks)
        if reference is not None:
            context, context_mask = self.add_reference(context, context_mask, reference, reference_mask)
        if task is not None:
            task_tokens, task_vector = self.task_embed(task)
            t_emb = t_emb + task_vector
            context = mint.cat([context, task_tokens.astype(context.dtype)], dim=1)
            context_mask = mint.cat([context_mask, mint.ones(task_tokens.shape[:2], dtype=context_mask.dtype)], dim=1)
        t_emb = t_emb.astype(self.compute_dtype)
        modulation = self.t_modulation(mint.nn.functional.silu(t_emb)).reshape(t_emb.shape[0], 6, -1)
        context = context.astype(self.compute_dtype)
        for block in self.blocks:
            tokens = block(tokens, pos, modulation, context, context_mask)
        out = self.final(tokens, t_emb)
        return unpatchify(out, grid, self.patch_size, self.out_channels).astype(ms.float32)

    def add_reference(self, context, context_mask, reference, reference_mask):
        """The context with the reference image's projected tokens after the text, masked where a sample has none."""
        tower = self.reference_encoder
        tokens = self.reference_projection(tower(tower.normalize(reference.astype(ms.float32))))
        mask = reference_mask.astype(context_mask.dtype).reshape(-1, 1) * mint.ones(
            tokens.shape[:2], dtype=context_mask.dtype)
        return mint.cat([context, tokens.astype(context.dtype)], dim=1), mint.cat([context_mask, mask], dim=1)
