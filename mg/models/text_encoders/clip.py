"""CLIP text transformer (serves long-prompt MetaCLIP): causal pre-norm transformer with learned positions.

Cell and parameter names mirror Hugging Face's `CLIPTextModel` with the `text_model.` prefix dropped. The output
is the whole last hidden state after the final LayerNorm (B, L, C): the DiT cross-attends to every token, so there
is no pooling and no projection. The position table may be longer than the checkpoint's (see encoder.py). The
transformer stack is shared with the vision tower (`mg.models.clip_encoder`).
"""
from dataclasses import dataclass, replace

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn

from mg.models.clip_encoder import CLIPEncoder
from mg.models.encoder_layers import MASK_VALUE, Embedding, LayerNorm, padding_bias


@dataclass(frozen=True)
class CLIPTextConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5

    @classmethod
    def from_hf(cls, cfg: dict, source: str) -> "CLIPTextConfig":
        """Build from a CLIPTextModel config.json dict or a CLIPModel one (its `text_config`)."""
        cfg = cfg.get("text_config", cfg)
        needed = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
        missing = [k for k in needed if k not in cfg]
        if missing:
            raise ValueError(f"{source}: CLIP text config lacks {missing}")
        fields = cls.__dataclass_fields__
        return cls(**{k: v for k, v in cfg.items() if k in fields})

    def with_positions(self, n: int) -> "CLIPTextConfig":
        return replace(self, max_position_embeddings=n)


class CLIPTextEmbeddings(nn.Cell):
    def __init__(self, cfg: CLIPTextConfig, dtype):
        super().__init__()
        self.token_embedding = Embedding(cfg.vocab_size, cfg.hidden_size, dtype)
        self.position_embedding = Embedding(cfg.max_position_embeddings, cfg.hidden_size, dtype)

    def construct(self, input_ids: Tensor) -> Tensor:
        n = input_ids.shape[1]
        return self.token_embedding(input_ids) + self.position_embedding.weight[:n].unsqueeze(0)


def causal_bias(length: int) -> Tensor:
    """(1, 1, L, L) fp32: MASK_VALUE above the diagonal (a token sees itself and earlier tokens only)."""
    return Tensor(np.triu(np.full((length, length), MASK_VALUE, np.float32), 1)[None, None])


class CLIPTextTransformer(nn.Cell):
    """input_ids (B, L), attention_mask (B, L) 0/1 -> last hidden state after the final LayerNorm (B, L, C)."""

    def __init__(self, cfg: CLIPTextConfig, dtype=ms.float32):
        super().__init__()
        self.config = cfg
        self.hidden_size = cfg.hidden_size
        self.embeddings = CLIPTextEmbeddings(cfg, dtype)
        self.encoder = CLIPEncoder(cfg, dtype)
        self.final_layer_norm = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps, dtype)

    def construct(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        n = input_ids.shape[1]
        if n > self.config.max_position_embeddings:
            raise ValueError(f"CLIP text input has {n} tokens but only {self.config.max_position_embeddings} positions")
        bias = causal_bias(n) + padding_bias(attention_mask)
        return self.final_layer_norm(self.encoder(self.embeddings(input_ids), bias))
