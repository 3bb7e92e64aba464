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
from mg.models.dit.kernels import (ROWS, RMSNormKernel, attention, dense, project_attended, project_heads,
                                   replay_attention, use_fused_kernels)


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

    def apply(self, x, weight, bias=None, layout=ROWS):
        """`layout`: where x's and the output's features are (kernels.dense)."""
        bias = None if bias is None else bias.astype(x.dtype)
        return dense(x, weight.astype(x.dtype), bias, self.fused, layout)


class RMSNorm(nn.Cell):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.weight = Parameter(initializer("ones", (dim,), ms.float32), name="weight")
        self.kernel = RMSNormKernel(eps, use_fused_kernels())

    def construct(self, x):
        return self.apply(x, self.weight)

    def apply(self, x, weight):
        return self.kernel(x, weight)


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
        """q, k, v in the attention kernel's layout (kernels.attention)."""
        return project_heads(self.qkv, x, qkv_weight, 3, self.num_heads, self.fused)

    def apply(self, x, qkv_weight, proj_weight, saved=None):
        """(output, the attention's result). A recomputed block passes that result from its first forward as
        `saved` and the attention is not computed again (it dominates long sequences)."""
        q, k, v = self.heads(x, qkv_weight)
        if saved is None:
            attended = attention(q, k, v, None, self.num_heads, self.fused)
        else:
            attended = replay_attention(q, k, v, saved)
        return project_attended(self.proj, attended, proj_weight, self.fused), attended


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
        q, = project_heads(self.q, x, q_weight, 1, self.num_heads, self.fused)
        k, v = project_heads(self.kv, context, kv_weight, 2, self.num_heads, self.fused)
        attended = attention(q, k, v, context_mask, self.num_heads, self.fused)
        return project_attended(self.proj, attended, proj_weight, self.fused)


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
