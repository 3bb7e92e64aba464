"""Building blocks of the transformer: RMSNorm, linear layers, self-/cross-attention and the SwiGLU FFN.

Every projection is a `Linear`, the layer that tensor parallelism (mg/parallel) replaces; the model itself knows
nothing of parallelism. Each layer's `apply` computes from weights passed in (`construct` passes its own
Parameters), so that a recomputed block (mg/models/dit/checkpoint.py) can run its layers on weights it was given.
Weights stay in their own dtype (fp32 master weights) and are cast to the activation dtype at use, so a bf16 run
keeps fp32 parameters while its matmuls run in bf16.
"""
import mindspore as ms
from mindspore import Parameter, mint, nn, ops
from mindspore.common.initializer import Zero, initializer

from mg.models.copying_views import split_equal
from mg.models.dit.kernels import RMSNormKernel, attention, dense, replay_attention, use_fused_kernels


def zero_init_(layer):
    """Set a layer's weight (and bias) to zero: used for adaLN gates and output projections (DiT practice)."""
    for param in layer.get_parameters():
        param.set_data(initializer(Zero(), param.shape, param.dtype))
    return layer


class Linear(mint.nn.Linear):
    """`mint.nn.Linear` computing in the input's dtype (through kernels.dense)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fused = use_fused_kernels()

    def construct(self, x):
        return self.apply(x, self.weight, self.bias)

    def apply(self, x, weight, bias=None):
        bias = None if bias is None else bias.astype(x.dtype)
        return dense(x, weight.astype(x.dtype), bias, self.fused)


class RMSNorm(nn.Cell):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.weight = Parameter(initializer("ones", (dim,), ms.float32), name="weight")
        self.kernel = RMSNormKernel(eps, use_fused_kernels())

    def construct(self, x):
        return self.apply(x, self.weight)

    def apply(self, x, weight):
        return self.kernel(x, weight)


# Heads split and merge as views (mint.transpose), unlike the models' other transposes (copying_views.py): as
# Transpose copies, q, k, v and the attention output are kept for backward besides the projections' outputs. Peak
# memory of d512x4's compiled step at 4096 tokens: 3503 MiB with copies against 2637 with views, and recompute saved
# nothing with copies (3462) against 2224 with views; the copies were ~10% faster (docs/performance.md).
def split_heads(x, num_heads):
    """(B, N, H * Dh) -> (B, H, N, Dh)"""
    b, n, _ = x.shape
    return mint.transpose(x.reshape(b, n, num_heads, -1), 1, 2)


def merge_heads(x):
    """(B, H, N, Dh) -> (B, N, H * Dh)"""
    b, _, n, _ = x.shape
    return mint.transpose(x, 1, 2).reshape(b, n, -1)


class SelfAttention(nn.Cell):
    """Bidirectional multi-head self-attention with one fused QKV projection."""

    def __init__(self, dim, num_heads):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"model width {dim} is not divisible by the number of heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = Linear(dim, 3 * dim, bias=False)
        self.proj = Linear(dim, dim, bias=False)
        self.fused = use_fused_kernels()

    def construct(self, x):
        return self.apply(x, self.qkv.weight, self.proj.weight)[0]

    def heads(self, x, qkv_weight):
        """q, k, v as (B, H, N, Dh)."""
        q, k, v = split_equal(self.qkv.apply(x, qkv_weight), 3)
        return split_heads(q, self.num_heads), split_heads(k, self.num_heads), split_heads(v, self.num_heads)

    def apply(self, x, qkv_weight, proj_weight, saved=None):
        """(output, the attention's (B, H, N, Dh) result). A recomputed block passes that result from its first
        forward as `saved` and the attention is not computed again (it dominates long sequences)."""
        q, k, v = self.heads(x, qkv_weight)
        attended = attention(q, k, v, None, self.fused) if saved is None else replay_attention(q, k, v, saved)
        return self.proj.apply(merge_heads(attended), proj_weight), attended


class CrossAttention(nn.Cell):
    """Attention from video tokens to the text context; padded text tokens (mask 0) get no weight.

    The output projection starts at zero so that a fresh block is an identity map."""

    def __init__(self, dim, num_heads):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"model width {dim} is not divisible by the number of heads {num_heads}")
        self.num_heads = num_heads
        self.q = Linear(dim, dim, bias=False)
        self.kv = Linear(dim, 2 * dim, bias=False)
        self.proj = zero_init_(Linear(dim, dim, bias=False))
        self.fused = use_fused_kernels()

    def construct(self, x, context, context_mask):
        return self.apply(x, context, context_mask, self.q.weight, self.kv.weight, self.proj.weight)

    def apply(self, x, context, context_mask, q_weight, kv_weight, proj_weight):
        q = split_heads(self.q.apply(x, q_weight), self.num_heads)
        k, v = split_equal(self.kv.apply(context, kv_weight), 2)
        k, v = split_heads(k, self.num_heads), split_heads(v, self.num_heads)
        return self.proj.apply(merge_heads(attention(q, k, v, context_mask, self.fused)), proj_weight)


class SwiGLU(nn.Cell):
    """LLaMa feed-forward: w2(silu(w1 x) * w3 x), with w1 and w3 fused into one projection."""

    def __init__(self, dim, hidden_dim):
        super().__init__()
        self.w13 = Linear(dim, 2 * hidden_dim, bias=False)
        self.w2 = Linear(hidden_dim, dim, bias=False)

    def construct(self, x):
        return self.apply(x, self.w13.weight, self.w2.weight)

    def apply(self, x, w13_weight, w2_weight):
        gate, up = split_equal(self.w13.apply(x, w13_weight), 2)
        return self.w2.apply(ops.silu(gate) * up, w2_weight)  # mint silu fails in a recomputed block under jit
