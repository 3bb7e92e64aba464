"""Building blocks of the transformer: linear layers, RMSNorm, self- and cross-attention, the SwiGLU FFN.

Every layer computes with mg.backends, which chooses the device's kernels. Each layer's `apply` computes from weights
passed in and its `construct` passes its own Parameters: a recomputed block (mg/backends/recompute.py) runs its
layers on weights it is given. Weights stay in their own dtype (fp32 master weights) and are cast to the activations'
dtype at use, so a bf16 run keeps fp32 parameters while its matmuls run in bf16. Every projection is a `Linear`, the
layer that tensor parallelism (mg/parallel) replaces; the model knows nothing of parallelism.
"""
import mindspore as ms
from mindspore import Parameter, mint, nn, ops
from mindspore.common.initializer import Zero, initializer

from mg.backends import ROWS, RMSNormKernel, attention, linear, merge_heads, replay_attention, split_equal, split_heads


def zero_init_(layer):
    """Set a layer's weight (and bias) to zero: used for adaLN gates and output projections (DiT practice)."""
    for param in layer.get_parameters():
        param.set_data(initializer(Zero(), param.shape, param.dtype))
    return layer


class Linear(mint.nn.Linear):
    """`mint.nn.Linear` computing in the input's dtype."""

    def construct(self, x):
        return self.apply(x, self.weight, self.bias)

    def apply(self, x, weight, bias=None, layout=ROWS):
        """`layout`: where x's and the output's features are (mg.backends.dense)."""
        return linear(x, weight.astype(x.dtype), None if bias is None else bias.astype(x.dtype), layout)


class RMSNorm(nn.Cell):
    """x / sqrt(mean(x^2) + eps) * weight, statistics in fp32."""

    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.weight = Parameter(initializer("ones", (dim,), ms.float32), name="weight")
        self.kernel = RMSNormKernel(eps)

    def construct(self, x):
        return self.apply(x, self.weight)

    def apply(self, x, weight):
        return self.kernel(x, weight)


def _head_dim(dim, num_heads):
    if dim % num_heads:
        raise ValueError(f"model width {dim} is not divisible by the number of heads {num_heads}")
    return dim // num_heads


class SelfAttention(nn.Cell):
    """Bidirectional multi-head self-attention, q, k and v from one fused projection.

    The number of heads follows from the projection's width and `head_dim`, so a tensor-parallel projection that
    holds a share of the heads needs no other change."""

    def __init__(self, dim, num_heads):
        super().__init__()
        self.head_dim = _head_dim(dim, num_heads)
        self.qkv = Linear(dim, 3 * dim, bias=False)
        self.proj = Linear(dim, dim, bias=False)

    def construct(self, x):
        return self.apply(x, *self.weights())[0]

    def weights(self):
        return self.qkv.weight, self.proj.weight

    def heads(self, x, qkv_weight):
        """q, k, v in attention's layout (mg.backends.mha)."""
        return split_heads(self.qkv, x, qkv_weight, 3, self.head_dim)

    def attend(self, q, k, v, proj_weight, saved=None):
        """(output, attention's result). `saved`: that result, already computed (a recomputed block passes it, so
        the attention is not computed again)."""
        attended = attention(q, k, v, None, self.head_dim) if saved is None else replay_attention(q, k, v, saved)
        return merge_heads(self.proj, attended, proj_weight), attended

    def apply(self, x, qkv_weight, proj_weight, saved=None):
        q, k, v = self.heads(x, qkv_weight)
        return self.attend(q, k, v, proj_weight, saved)


class CrossAttention(nn.Cell):
    """Attention from video tokens to the text context; padded text tokens (mask 0) get no weight.

    The output projection starts at zero so that a fresh block is an identity map."""

    def __init__(self, dim, num_heads):
        super().__init__()
        self.head_dim = _head_dim(dim, num_heads)
        self.q = Linear(dim, dim, bias=False)
        self.kv = Linear(dim, 2 * dim, bias=False)
        self.proj = zero_init_(Linear(dim, dim, bias=False))

    def construct(self, x, context, context_mask):
        return self.apply(x, context, context_mask, *self.weights())

    def weights(self):
        return self.q.weight, self.kv.weight, self.proj.weight

    def apply(self, x, context, context_mask, q_weight, kv_weight, proj_weight):
        q, = split_heads(self.q, x, q_weight, 1, self.head_dim)
        k, v = split_heads(self.kv, context, kv_weight, 2, self.head_dim)
        return merge_heads(self.proj, attention(q, k, v, context_mask, self.head_dim), proj_weight)


class SwiGLU(nn.Cell):
    """LLaMa feed-forward: w2(silu(w1 x) * w3 x), with w1 and w3 fused into one projection."""

    def __init__(self, dim, hidden_dim):
        super().__init__()
        self.w13 = Linear(dim, 2 * hidden_dim, bias=False)
        self.w2 = Linear(hidden_dim, dim, bias=False)

    def construct(self, x):
        return self.apply(x, *self.weights())

    def weights(self):
        return self.w13.weight, self.w2.weight

    def apply(self, x, w13_weight, w2_weight):
        gate, up = split_equal(self.w13.apply(x, w13_weight), 2)
        return self.w2.apply(ops.silu(gate) * up, w2_weight)  # mint silu fails in a recomputed block under jit
