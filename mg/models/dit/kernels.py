"""The one place where the transformer chooses between fused device kernels and plain MindSpore math.

On Ascend, flash attention (`ops.flash_attention_score`), the fused RMSNorm (`ops.rms_norm`) and `mint`'s linear
are used. Elsewhere (CPU, where those kernels do not exist) the same arithmetic is written with MindSpore
matmul/softmax/rsqrt. Both paths keep softmax and normalisation statistics in fp32 when activations are bf16.

The two paths lay attention's heads out differently, each so that no transpose is needed: the fused kernel takes
(B, N, H * Dh) rows, the projections' own output (BSH); the plain path takes (B, H, Dh, N), each head's features
before its tokens, which the q/k/v projection writes directly as w x^T and the output projection
reads as a transposed operand. (Splitting rows into (B, H, N, Dh) heads took a transpose or a strided view per
tensor, and under ms.jit on CPU a view is copied element by element: 21% of d512x4's compiled step.)

The plain path has hand-written backwards, because autodiff's on CPU spends much of a step on memory-bound kernels
(docs/performance.md has the profiles and the before/after figures):
- attention (FlashAttention's backward, tiled over queries only): the probabilities are recomputed from q and k; the
  softmax gradient uses delta = rowsum(dO * O), a reduction over head_dim instead of over the keys, folded into the
  dP matmul; every product is a batched matmul with transposed operands. No (N, L) transpose, row-sum or
  subtraction is materialised and the probabilities are not kept for the backward;
- dense layers: the weight gradient dy^T x as a transposed-operand matmul instead of Transpose + MatMul, and the
  feature-major projections' gradients likewise;
- RMSNorm, adaLN modulation and gated residuals: closed forms, with sums over tokens as ones-row matmuls (CPU
  ReduceSum over a middle or leading axis is slow).
"""
import mindspore as ms
from mindspore import mint, nn, ops

from mg.models.copying_views import split_equal
from mg.models.expand import expand

FUSED_DEVICES = ("Ascend",)

_MM = ops.MatMul()
_MM_NT = ops.MatMul(transpose_b=True)  # a @ b^T
_MM_TN = ops.MatMul(transpose_a=True)  # a^T @ b
_BMM = ops.BatchMatMul()
_BMM_NT = ops.BatchMatMul(transpose_b=True)
_BMM_TN = ops.BatchMatMul(transpose_a=True)
_BMM_TT = ops.BatchMatMul(transpose_a=True, transpose_b=True)
ZEROS_LIKE = ops.ZerosLike()  # not ops.zeros_like, a Python function: see _chunk_grads


def use_fused_kernels(device_target=None):
    """Whether the fused kernels should be used on `device_target` (default: the current MindSpore device)."""
    if device_target is None:
        device_target = ms.get_context("device_target")
    return device_target in FUSED_DEVICES


class _RowsLinear(nn.Cell):
    """x (M, I) @ w (O, I)^T; dx = dy @ w and dw = dy^T @ x as transposed-operand matmuls (autodiff of a dense
    layer materialises the transposes: ~18% of a 1B-block step's kernel time at 256 tokens)."""

    def construct(self, x, w):
        return _MM_NT(x, w)

    def bprop(self, x, w, out, dout):
        return _MM(dout, w), _MM_TN(dout, x)


def _per_sample(w, batch):
    return ops.broadcast_to(w, (batch, *w.shape))


def _sum_samples(g):
    """(B, O, I) -> (O, I) as a ones-row matmul (CPU ReduceSum over a leading axis is slow)."""
    return _MM(mint.ones((1, g.shape[0]), dtype=g.dtype), g.reshape(g.shape[0], -1)).reshape(g.shape[1:])


class _ToFeatureMajor(nn.Cell):
    """x (B, N, I), w (O, I) -> w x^T (B, O, N): a projection whose output has the features before the tokens."""

    def construct(self, x, w):
        return _BMM_NT(_per_sample(w, x.shape[0]), x)

    def bprop(self, x, w, out, dout):
        return _BMM_TN(dout, _per_sample(w, x.shape[0])), _sum_samples(_BMM(dout, x))


class _FromFeatureMajor(nn.Cell):
    """xf (B, I, N), w (O, I) -> xf^T w^T (B, N, O): a projection of features-before-tokens input to rows."""

    def construct(self, xf, w):
        return _BMM_TT(xf, _per_sample(w, xf.shape[0]))

    def bprop(self, xf, w, out, dout):
        return _BMM_TT(_per_sample(w, xf.shape[0]), dout), _sum_samples(_BMM_TT(dout, xf))


_PLAIN_LINEAR = _RowsLinear()
_TO_FEATURE_MAJOR = _ToFeatureMajor()
_FROM_FEATURE_MAJOR = _FromFeatureMajor()

# the layouts of `dense`
ROWS = "rows"                              # x (..., I) -> (..., O)
TO_FEATURE_MAJOR = "to_feature_major"      # x (B, N, I) -> (B, O, N), plain path only
FROM_FEATURE_MAJOR = "from_feature_major"  # x (B, I, N) -> (B, N, O), plain path only


def dense(x, weight, bias, fused, layout=ROWS):
    """x @ weight (O, I)^T + bias (O,) or no bias, in the dtypes given; `layout` says where the features are."""
    if layout == ROWS and fused:
        return mint.nn.functional.linear(x, weight, bias)
    if layout == TO_FEATURE_MAJOR:
        out = _TO_FEATURE_MAJOR(x, weight)
        bias = None if bias is None else bias.reshape(-1, 1)
    elif layout == FROM_FEATURE_MAJOR:
        out = _FROM_FEATURE_MAJOR(x, weight)
    else:
        out = _PLAIN_LINEAR(x.reshape(-1, x.shape[-1]), weight).reshape(*x.shape[:-1], weight.shape[0])
    return out if bias is None else out + expand(bias, out.shape)


def _row_sums(x):
    """(B, N, D) -> (B, 1, D) sums over axis 1 as a ones-row batched matmul (CPU ReduceSum over axis 1 is slow)."""
    return _BMM(mint.ones((x.shape[0], 1, x.shape[1]), dtype=x.dtype), x)


class _PlainRMSNorm(nn.Cell):
    """x * rsqrt(mean(x^2) + eps) * w in fp32, with the closed-form backward and dw as a ones-row matmul."""

    def __init__(self, eps):
        super().__init__()
        self.eps = eps

    def _normed(self, x):
        x32 = x.astype(ms.float32)
        inv_rms = expand(mint.rsqrt(mint.mean(x32 * x32, dim=-1, keepdim=True) + self.eps), x.shape)
        return x32 * inv_rms, inv_rms

    def construct(self, x, weight):
        return (self._normed(x)[0] * expand(weight.astype(ms.float32), x.shape)).astype(x.dtype)

    def bprop(self, x, weight, out, dout):
        normed, inv_rms = self._normed(x)
        g = dout.astype(ms.float32)
        g_w = g * expand(weight.astype(ms.float32), x.shape)
        dx = inv_rms * (g_w - normed * expand(mint.mean(g_w * normed, dim=-1, keepdim=True), x.shape))
        dw = _row_sums((g * normed).reshape(1, -1, weight.shape[0])).reshape(weight.shape)
        return dx.astype(x.dtype), dw.astype(weight.dtype)


class RMSNormKernel(nn.Cell):
    """RMSNorm over the last axis of x with a given weight, statistics in fp32, result in the input dtype."""

    def __init__(self, eps, fused):
        super().__init__()
        self.eps = eps
        self.fused = fused
        self.plain = _PlainRMSNorm(eps)

    def construct(self, x, weight):
        if self.fused:
            return ops.rms_norm(x, weight.astype(x.dtype), self.eps)[0]
        return self.plain(x, weight)


class _Modulate(nn.Cell):
    """x * (1 + scale) + shift for x (B, N, D) and per-sample scale, shift (B, 1, D); token sums as matmuls."""

    def construct(self, x, shift, scale):
        return x * expand(1 + scale, x.shape) + expand(shift, x.shape)

    def bprop(self, x, shift, scale, out, dout):
        return dout * expand(1 + scale, x.shape), _row_sums(dout), _row_sums(dout * x)


class _GatedAdd(nn.Cell):
    """x + gate * y for x, y (B, N, D) and a per-sample gate (B, 1, D); token sums as matmuls."""

    def construct(self, x, gate, y):
        return x + expand(gate, y.shape) * y

    def bprop(self, x, gate, y, out, dout):
        return dout, _row_sums(dout * y), dout * expand(gate, y.shape)


_MODULATE = _Modulate()
_GATED_ADD = _GatedAdd()


def modulate(x, shift, scale):
    """adaLN modulation x * (1 + scale) + shift of tokens (B, N, D) by per-sample vectors (B, 1, D)."""
    return _MODULATE(x, shift, scale)


def gated_add(x, gate, y):
    """The gated residual x + gate * y, gate (B, 1, D) per sample."""
    return _GATED_ADD(x, gate, y)


# Score elements (B * heads * queries * keys) computed at a time: longer sequences run in query chunks, so the
# (N, L) matrices of one chunk (128 MiB each in fp32) exist at once, not those of the whole sequence. 2^24 was
# leaner at 4096 tokens and heavier at 8192 in the training step (docs/performance.md), so this stays
CHUNK_SCORES = 2 ** 25

# Attention's q, k, v and output are (B, N, H * Dh) on the fused path and (B, H, Dh, N) on the plain one (module
# docstring); the axis of their tokens, by `fused`
TOKEN_AXIS = {True: 1, False: 3}


def project_heads(linear, x, weight, parts, num_heads, fused):
    """The `parts` equal outputs of projection `linear` (a `Linear` or its parallel version) of tokens x
    (B, N, D), such as q, k, v, as attention inputs in the path's layout (`attention`)."""
    if fused:
        out = linear.apply(x, weight)
        axis = -1
    else:
        out = linear.apply(x, weight, layout=TO_FEATURE_MAJOR)
        b, _, n = out.shape
        out = out.reshape(b, parts * num_heads, -1, n)
        axis = 1
    return (out,) if parts == 1 else split_equal(out, parts, axis)


def project_attended(linear, attended, weight, fused):
    """Projection `linear` of attention's output (in the path's layout) to token rows (B, N, D_out)."""
    if fused:
        return linear.apply(attended, weight)
    b, h, head_dim, n = attended.shape
    return linear.apply(attended.reshape(b, h * head_dim, n), weight, layout=FROM_FEATURE_MAJOR)


@ms.constexpr
def _query_chunks(q_shape, keys):
    """(start, stop) of the query chunks; the softmax of each is complete (every chunk sees all keys)."""
    b, h, _, n = q_shape
    rows = CHUNK_SCORES // (b * h * keys)
    rows = rows if rows > 0 else 1  # no min/max/generators: this runs inside compiled graphs too
    chunks = []
    for start in range(0, n, rows):
        chunks.append((start, start + rows if start + rows < n else n))
    return chunks


def _probabilities(q, k, bias):
    """softmax(q^T k + bias) (B, H, N, L) in fp32 for q (B, H, Dh, N), already scaled, and k (B, H, Dh, L)."""
    scores = _BMM_TN(q, k).astype(ms.float32)
    if bias is not None:
        scores = scores + expand(bias, scores.shape)
    return mint.softmax(scores, dim=-1)


def _chunk_out(q, k, v, bias):
    return _BMM_NT(v, _probabilities(q, k, bias).astype(v.dtype))


def _attention_out(q, k, v, bias):
    """v softmax(q^T k + bias)^T, chunk by chunk of queries; each chunk waits for the previous one's output
    (ops.depend), so a compiled graph does not run them side by side with all their score matrices alive."""
    chunks = _query_chunks(q.shape, k.shape[3])
    if len(chunks) == 1:  # no slicing: one loop for both cases made a d512x4 1024-token step ~20% slower
        return _chunk_out(q, k, v, bias)
    outs = [_chunk_out(q[..., :chunks[0][1]], k, v, bias)]
    for start, stop in chunks[1:]:
        outs.append(_chunk_out(ops.depend(q[..., start:stop], outs[-1]), k, v, bias))
    return mint.cat(outs, dim=3)


def _chunk_grads(q, k, v_ext, bias, dout, dout_ext):
    """dq, dk, dv of one query chunk: q, dout, dout_ext are the chunk's columns."""
    # _probabilities written out: under jit a function used by both construct and bprop breaks the compile of a
    # recomputed block (mg/models/dit/checkpoint.py)
    scores = _BMM_TN(q, k).astype(ms.float32)
    if bias is not None:
        scores = scores + expand(bias, scores.shape)
    probs = mint.softmax(scores, dim=-1)
    dv = _BMM(dout, probs.astype(dout.dtype))
    dscores = (probs * _BMM_TN(dout_ext, v_ext).astype(ms.float32)).astype(q.dtype)
    return _BMM_NT(k, dscores), _BMM(q, dscores), dv


def _attention_grads(q, k, v, bias, out, dout):
    """dq, dk, dv of out = v softmax(q^T k + bias)^T."""
    b, h, head_dim, n = out.shape
    # delta = rowsum(dP * P) = sum of dO * O over head_dim, as a ones-row matmul (that axis is not the last)
    prod = dout.astype(ms.float32) * out.astype(ms.float32)
    delta = _BMM(mint.ones((b, h, 1, head_dim), dtype=ms.float32), prod)
    # dP - delta as one matmul, [dO; -delta]^T [V; 1], instead of a separate (N, L) subtraction
    dout_ext = mint.cat([dout, (-delta).astype(dout.dtype)], dim=2)
    v_ext = mint.cat([v, mint.ones((b, h, 1, v.shape[3]), dtype=v.dtype)], dim=2)
    # Through dout (and then each chunk through the previous one's dk): otherwise nothing orders the recomputation
    # after the forward, and under ms.jit every block's probabilities were computed early, or merged with the
    # forward's, and all kept (toy model, 4096 tokens: 5.7 -> 3.9 GB peak). A chunk's dout_ext waits for dk too:
    # ordered through q alone, every chunk's dP = dout_ext^T v_ext was computed up front and kept, the whole (N, N)
    # matrix (jitted attention gradient, 8 heads, 8192 tokens: 2696 -> 728 MiB peak over the start,
    # tools/benchmark_attention_memory.py)
    chunks = _query_chunks(q.shape, k.shape[3])
    if len(chunks) == 1:
        return _chunk_grads(ops.depend(q, dout), k, v_ext, bias, dout, dout_ext)
    stop = chunks[0][1]
    dq, dk, dv = _chunk_grads(ops.depend(q[..., :stop], dout), k, v_ext, bias, dout[..., :stop],
                              dout_ext[..., :stop])
    dqs = [dq]
    for start, stop in chunks[1:]:
        dq, dk_part, dv_part = _chunk_grads(ops.depend(q[..., start:stop], dk), k, v_ext, bias,
                                            dout[..., start:stop], ops.depend(dout_ext[..., start:stop], dk))
        dqs.append(dq)
        dk, dv = dk + dk_part, dv + dv_part
    return mint.cat(dqs, dim=3), dk, dv


class _Attention(nn.Cell):
    """Attention on (B, H, Dh, N) heads, q pre-scaled, with the hand-written backward."""

    def construct(self, q, k, v):
        return _attention_out(q, k, v, None)

    def bprop(self, q, k, v, out, dout):
        return _attention_grads(q, k, v, None, out, dout)


class _BiasedAttention(nn.Cell):
    """Attention with a constant additive bias (B, 1, 1, L) on the scores (key padding), hand-written backward."""

    def construct(self, q, k, v, bias):
        return _attention_out(q, k, v, bias)

    def bprop(self, q, k, v, bias, out, dout):
        return (*_attention_grads(q, k, v, bias, out, dout), ZEROS_LIKE(bias))


class _AttentionReplay(nn.Cell):
    """The attention of a recomputed block: gives back `saved`, the output of the block's first forward, so the
    recomputation computes no score matrices; the backward is `_Attention`'s, from q, k, v and that output."""

    def construct(self, q, k, v, saved):
        return saved

    def bprop(self, q, k, v, saved, out, dout):
        return (*_attention_grads(q, k, v, None, saved, dout), ZEROS_LIKE(saved))


_PLAIN_ATTENTION = _Attention()
_PLAIN_BIASED_ATTENTION = _BiasedAttention()
_ATTENTION_REPLAY = _AttentionReplay()


def attention(q, k, v, key_mask, num_heads, fused):
    """Bidirectional multi-head attention of q (queries), k, v (keys), laid out (B, N, H * Dh) when `fused` and
    (B, H, Dh, N) otherwise; the result has q's layout.

    `key_mask` is None or (B, L) with 1 for real keys and 0 for padding; padded keys get no weight. A query whose keys
    are all padding returns zeros (instead of an average over padding), so padded values never leak into the output.
    """
    if fused:
        scale = (q.shape[-1] // num_heads) ** -0.5
        drop = None
        if key_mask is not None:
            drop = (key_mask[:, None, None, :] == 0).astype(ms.uint8)
            drop = ops.broadcast_to(drop, (q.shape[0], 1, q.shape[1], k.shape[1]))
        out = ops.flash_attention_score(q, k, v, head_num=num_heads, attn_mask=drop, scalar_value=scale,
                                        input_layout="BSH")
    elif key_mask is None:
        out = _PLAIN_ATTENTION(q * q.shape[2] ** -0.5, k, v)
    else:
        bias = (1.0 - key_mask.astype(ms.float32)) * -1e9
        out = _PLAIN_BIASED_ATTENTION(q * q.shape[2] ** -0.5, k, v, bias[:, None, None, :])
    if key_mask is not None:
        any_valid = (key_mask.astype(ms.float32).sum(axis=-1) > 0).astype(out.dtype)
        out = out * expand(any_valid.reshape((-1,) + (1,) * (out.ndim - 1)), out.shape)
    return out


def replay_attention(q, k, v, saved):
    """`attention(q, k, v, None, num_heads, fused=False)` in a recomputed block (mg/models/dit/checkpoint.py):
    returns `saved`, what that attention returned in the block's first forward, and differentiates as the attention
    does."""
    return _ATTENTION_REPLAY(q * q.shape[2] ** -0.5, k, v, saved)
