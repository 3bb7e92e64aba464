"""Building blocks shared by the T5 and CLIP text encoders and the CLIP vision tower (`mg.models.clip_vision`).

They live outside `mg.models.text_encoders` so the transformer (`mg.models.dit`) can build a vision tower from them
without importing the text encoders (an import-linter independence contract).

Names of parameters follow Hugging Face's (`weight`, `bias`) so checkpoints map onto the cells name by name.
Norms and softmax run in fp32 whatever the weight dtype (bf16 on Ascend, fp32 on CPU).
"""
import mindspore as ms
from mindspore import Parameter, Tensor, mint, nn, ops
from mindspore.common.initializer import initializer

from mg.backends import permute

# Additive mask value: large enough that exp() underflows to exactly 0, small enough that adding two never overflows.
MASK_VALUE = -1e9


# Named functions, not lambdas: ms.jit parses an activation's source and cannot parse a lambda inside a dict literal.
def gelu(x: Tensor) -> Tensor:
    return ops.gelu(x, approximate="none")  # exact erf form


def gelu_tanh(x: Tensor) -> Tensor:
    return ops.gelu(x, approximate="tanh")


def quick_gelu(x: Tensor) -> Tensor:
    return x * mint.sigmoid(1.702 * x)  # original OpenAI CLIP


ACTIVATIONS = {
    "relu": mint.nn.functional.relu,
    "gelu": gelu,
    "gelu_new": gelu_tanh,  # HF's name for the tanh approximation (T5 v1.1)
    "gelu_pytorch_tanh": gelu_tanh,
    "quick_gelu": quick_gelu,
    "silu": mint.nn.functional.silu,
}


def activation(name: str, where: str):
    """Look up an activation by its Hugging Face name; `where` names the config for the error message."""
    if name not in ACTIVATIONS:
        raise ValueError(f"{where}: unsupported activation {name!r}; supported: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class Embedding(nn.Cell):
    """Lookup table (mint.nn.Embedding has no CPU kernel, ops.gather does)."""

    def __init__(self, num_embeddings: int, dim: int, dtype=ms.float32):
        super().__init__()
        self.weight = Parameter(initializer("normal", (num_embeddings, dim), dtype), name="weight")

    def construct(self, ids: Tensor) -> Tensor:
        return ops.gather(self.weight, ids, 0)


class LayerNorm(nn.Cell):
    """LayerNorm with weight and bias, computed in fp32 (mint layer_norm lacks a CPU kernel)."""

    def __init__(self, dim: int, eps: float, dtype=ms.float32):
        super().__init__()
        self.eps = eps
        self.weight = Parameter(initializer("ones", (dim,), ms.float32), name="weight")
        self.bias = Parameter(initializer("zeros", (dim,), ms.float32), name="bias")
        self.out_dtype = dtype

    def construct(self, x: Tensor) -> Tensor:
        x = x.astype(ms.float32)
        centered = x - mint.mean(x, -1, True)
        var = mint.mean(centered * centered, -1, True)
        return (centered * mint.rsqrt(var + self.eps) * self.weight + self.bias).astype(self.out_dtype)


class RMSNorm(nn.Cell):
    """T5's LayerNorm: scale only, no mean subtraction, no bias; computed in fp32."""

    def __init__(self, dim: int, eps: float, dtype=ms.float32):
        super().__init__()
        self.eps = eps
        self.weight = Parameter(initializer("ones", (dim,), ms.float32), name="weight")
        self.out_dtype = dtype

    def construct(self, x: Tensor) -> Tensor:
        x = x.astype(ms.float32)
        x = x * mint.rsqrt(mint.mean(x * x, -1, True) + self.eps)
        return (x * self.weight).astype(self.out_dtype)


def split_heads(x: Tensor, num_heads: int) -> Tensor:
    """(B, L, H*D) -> (B, H, L, D)."""
    b, n, _ = x.shape
    return permute(x.reshape(b, n, num_heads, -1), (0, 2, 1, 3))


def merge_heads(x: Tensor) -> Tensor:
    """(B, H, L, D) -> (B, L, H*D)."""
    b, h, n, d = x.shape
    return permute(x, (0, 2, 1, 3)).reshape(b, n, h * d)


def attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, scale: float) -> Tensor:
    """Softmax(scale * q k^T + bias) v on (B, H, L, D); scores and softmax in fp32.

    `bias` broadcasts to (B, H, Lq, Lk) and carries masks (MASK_VALUE) and T5's relative position bias.
    """
    scores = mint.matmul(q.astype(ms.float32), permute(k.astype(ms.float32), (0, 1, 3, 2)))
    if scale != 1.0:
        scores = scores * scale
    probs = mint.softmax(scores + bias, dim=-1).astype(v.dtype)
    return mint.matmul(probs, v)


def padding_bias(mask: Tensor) -> Tensor:
    """Attention mask (B, L) of 1 = token, 0 = padding -> additive key bias (B, 1, 1, L) in fp32."""
    return ((1.0 - mask.astype(ms.float32)) * MASK_VALUE).reshape(mask.shape[0], 1, 1, mask.shape[1])
