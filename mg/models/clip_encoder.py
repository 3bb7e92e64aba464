"""The pre-norm transformer stack shared by CLIP's text and vision towers (`encoder.layers.*` in HF checkpoints).

It lives outside `mg.models.text_encoders` so the vision tower (`mg.models.clip_vision`, used by the transformer
for personalization) can reuse it without the transformer importing the text encoders. Cell and parameter names
mirror Hugging Face's so checkpoints load name by name: do not rename them. A config needs only hidden_size,
intermediate_size, num_hidden_layers, num_attention_heads, hidden_act and layer_norm_eps (both towers' configs have
them). Masking (causal, padding, none) comes in as an additive attention bias.
"""
from mindspore import Tensor, mint, nn

from mg.models.encoder_layers import LayerNorm, activation, attention, merge_heads, split_heads


class CLIPAttention(nn.Cell):
    def __init__(self, cfg, dtype):
        super().__init__()
        d = cfg.hidden_size
        self.num_heads = cfg.num_attention_heads
        self.scale = (d // self.num_heads) ** -0.5
        self.q_proj = mint.nn.Linear(d, d, dtype=dtype)
        self.k_proj = mint.nn.Linear(d, d, dtype=dtype)
        self.v_proj = mint.nn.Linear(d, d, dtype=dtype)
        self.out_proj = mint.nn.Linear(d, d, dtype=dtype)

    def construct(self, x: Tensor, bias: Tensor) -> Tensor:
        h = self.num_heads
        q, k, v = split_heads(self.q_proj(x), h), split_heads(self.k_proj(x), h), split_heads(self.v_proj(x), h)
        return self.out_proj(merge_heads(attention(q, k, v, bias, self.scale)))


class CLIPMLP(nn.Cell):
    def __init__(self, cfg, dtype):
        super().__init__()
        self.act = activation(cfg.hidden_act, f"CLIP hidden_act={cfg.hidden_act!r}")
        self.fc1 = mint.nn.Linear(cfg.hidden_size, cfg.intermediate_size, dtype=dtype)
        self.fc2 = mint.nn.Linear(cfg.intermediate_size, cfg.hidden_size, dtype=dtype)

    def construct(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class CLIPEncoderLayer(nn.Cell):
    def __init__(self, cfg, dtype):
        super().__init__()
        self.self_attn = CLIPAttention(cfg, dtype)
        self.layer_norm1 = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps, dtype)
        self.mlp = CLIPMLP(cfg, dtype)
        self.layer_norm2 = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps, dtype)

    def construct(self, x: Tensor, bias: Tensor) -> Tensor:
        x = x + self.self_attn(self.layer_norm1(x), bias)
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nn.Cell):
    """x (B, L, C), bias broadcasting to (B, H, L, L) -> (B, L, C); no final norm (each tower has its own)."""

    def __init__(self, cfg, dtype):
        super().__init__()
        self.layers = nn.CellList([CLIPEncoderLayer(cfg, dtype) for _ in range(cfg.num_hidden_layers)])

    def construct(self, x: Tensor, bias: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x, bias)
        return x
