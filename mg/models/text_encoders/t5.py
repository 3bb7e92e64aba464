"""T5 encoder (serves UL2 and ByT5): relative position bias, RMS LayerNorm, relu or gated feed-forward.

Cell and parameter names mirror Hugging Face's `T5EncoderModel` with the `encoder.` prefix dropped, so a
checkpoint loads name by name (see mg.models.hf_checkpoint). Only the encoder exists; a full encoder-decoder checkpoint
(UL2 is one) loads its encoder half.
"""
import math
from dataclasses import dataclass

import mindspore as ms
import numpy as np
from mindspore import Tensor, mint, nn

from mg.backends import permute
from mg.models.encoder_layers import Embedding, RMSNorm, activation, attention, merge_heads, padding_bias, split_heads


@dataclass(frozen=True)
class T5Config:
    vocab_size: int
    d_model: int
    d_kv: int
    d_ff: int
    num_layers: int
    num_heads: int
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "relu"  # "relu", "gated-gelu" (T5 v1.1, UL2, ByT5) or "[gated-]<act>"

    @property
    def is_gated(self) -> bool:
        return self.feed_forward_proj.startswith("gated-")

    @property
    def act_name(self) -> str:
        # Hugging Face maps "gated-gelu" to the tanh approximation, as the original T5 v1.1 did.
        if self.feed_forward_proj == "gated-gelu":
            return "gelu_new"
        return self.feed_forward_proj.split("-")[-1]

    @classmethod
    def from_hf(cls, cfg: dict, source: str) -> "T5Config":
        """Build from a Hugging Face config.json dict; `source` names the file in errors."""
        missing = [k for k in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads") if k not in cfg]
        if missing:
            raise ValueError(f"{source}: T5 config lacks {missing}")
        fields = cls.__dataclass_fields__
        return cls(**{k: v for k, v in cfg.items() if k in fields})


def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> np.ndarray:
    """Bidirectional T5 buckets of (key - query) for a length x length grid, int32 (shape only, so NumPy).

    Half the buckets are for keys after the query; within each half, distances below num_buckets/4 get their own
    bucket and longer ones share log-spaced buckets up to max_distance.
    """
    pos = np.arange(length)
    rel = pos[None, :] - pos[:, None]
    half = num_buckets // 2
    buckets = (rel > 0).astype(np.int64) * half
    dist = np.abs(rel)
    exact = half // 2
    # float32 as in the reference implementation, so bucket edges fall on the same integers; distances below
    # `exact` do not use this branch, clamping them to 1 only avoids log(0)
    ratio = np.maximum(dist, 1).astype(np.float32) / np.float32(exact)
    log_ratio = np.log(ratio) / np.float32(math.log(max_distance / exact))
    far = exact + (log_ratio * np.float32(half - exact)).astype(np.int64)
    far = np.minimum(far, half - 1)
    buckets += np.where(dist < exact, dist, far)
    return buckets.astype(np.int32)


class T5Attention(nn.Cell):
    def __init__(self, cfg: T5Config, has_relative_bias: bool, dtype):
        super().__init__()
        inner = cfg.num_heads * cfg.d_kv
        self.cfg = cfg
        self.q = mint.nn.Linear(cfg.d_model, inner, bias=False, dtype=dtype)
        self.k = mint.nn.Linear(cfg.d_model, inner, bias=False, dtype=dtype)
        self.v = mint.nn.Linear(cfg.d_model, inner, bias=False, dtype=dtype)
        self.o = mint.nn.Linear(inner, cfg.d_model, bias=False, dtype=dtype)
        if has_relative_bias:  # only the first layer owns the table; its bias is shared by all layers
            self.relative_attention_bias = Embedding(cfg.relative_attention_num_buckets, cfg.num_heads, ms.float32)

    def position_bias(self, length: int) -> Tensor:
        """(1, H, L, L) fp32 bias from the bucket table."""
        buckets = relative_position_buckets(
            length, self.cfg.relative_attention_num_buckets, self.cfg.relative_attention_max_distance
        )
        values = self.relative_attention_bias(Tensor(buckets))  # (L, L, H)
        return permute(values, (2, 0, 1)).unsqueeze(0)

    def construct(self, x: Tensor, bias: Tensor) -> Tensor:
        h = self.cfg.num_heads
        q, k, v = split_heads(self.q(x), h), split_heads(self.k(x), h), split_heads(self.v(x), h)
        # T5 folds 1/sqrt(d) into its initialisation, so scores are not scaled
        return self.o(merge_heads(attention(q, k, v, bias, scale=1.0)))


class T5SelfAttentionLayer(nn.Cell):
    def __init__(self, cfg: T5Config, has_relative_bias: bool, dtype):
        super().__init__()
        self.SelfAttention = T5Attention(cfg, has_relative_bias, dtype)
        self.layer_norm = RMSNorm(cfg.d_model, cfg.layer_norm_epsilon, dtype)

    def construct(self, x: Tensor, bias: Tensor) -> Tensor:
        return x + self.SelfAttention(self.layer_norm(x), bias)


class T5DenseFeedForward(nn.Cell):
    """wo(act(wi x)) or, gated, wo(act(wi_0 x) * wi_1 x)."""

    def __init__(self, cfg: T5Config, dtype):
        super().__init__()
        self.gated = cfg.is_gated
        self.act = activation(cfg.act_name, f"T5 feed_forward_proj={cfg.feed_forward_proj!r}")
        if self.gated:
            self.wi_0 = mint.nn.Linear(cfg.d_model, cfg.d_ff, bias=False, dtype=dtype)
            self.wi_1 = mint.nn.Linear(cfg.d_model, cfg.d_ff, bias=False, dtype=dtype)
        else:
            self.wi = mint.nn.Linear(cfg.d_model, cfg.d_ff, bias=False, dtype=dtype)
        self.wo = mint.nn.Linear(cfg.d_ff, cfg.d_model, bias=False, dtype=dtype)

    def construct(self, x: Tensor) -> Tensor:
        if self.gated:
            return self.wo(self.act(self.wi_0(x)) * self.wi_1(x))
        return self.wo(self.act(self.wi(x)))


class T5FeedForwardLayer(nn.Cell):
    def __init__(self, cfg: T5Config, dtype):
        super().__init__()
        self.DenseReluDense = T5DenseFeedForward(cfg, dtype)
        self.layer_norm = RMSNorm(cfg.d_model, cfg.layer_norm_epsilon, dtype)

    def construct(self, x: Tensor) -> Tensor:
        return x + self.DenseReluDense(self.layer_norm(x))


class T5Block(nn.Cell):
    def __init__(self, cfg: T5Config, has_relative_bias: bool, dtype):
        super().__init__()
        self.layer = nn.CellList([T5SelfAttentionLayer(cfg, has_relative_bias, dtype), T5FeedForwardLayer(cfg, dtype)])

    def construct(self, x: Tensor, bias: Tensor) -> Tensor:
        return self.layer[1](self.layer[0](x, bias))


class T5Encoder(nn.Cell):
    """input_ids (B, L) int, attention_mask (B, L) 0/1 -> last hidden state after the final norm (B, L, d_model)."""

    def __init__(self, cfg: T5Config, dtype=ms.float32):
        super().__init__()
        self.config = cfg
        self.hidden_size = cfg.d_model
        self.embed_tokens = Embedding(cfg.vocab_size, cfg.d_model, dtype)
        self.block = nn.CellList([T5Block(cfg, i == 0, dtype) for i in range(cfg.num_layers)])
        self.final_layer_norm = RMSNorm(cfg.d_model, cfg.layer_norm_epsilon, dtype)

    def construct(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        x = self.embed_tokens(input_ids)
        bias = self.block[0].layer[0].SelfAttention.position_bias(input_ids.shape[1]) + padding_bias(attention_mask)
        for block in self.block:
            x = block(x, bias)
        return self.final_layer_norm(x)
