"""The one place where the transformer chooses between fused device kernels and plain MindSpore math.

On Ascend, flash attention (`ops.flash_attention_score`), the fused RMSNorm (`ops.rms_norm`) and `mint`'s linear
are used. Elsewhere (CPU, where those kernels do not exist) the same arithmetic is written with MindSpore
matmul/softmax/rsqrt. Both paths keep softmax and normalisation statistics in fp32 when activations are bf16.

The plain path has hand-written backwards, because autodiff's on CPU spends much of a step on memory-bound kernels
(docs/performance.md has the profiles and the before/after figures):
- attention (FlashAttention's backward, tiled over queries only): the probabilities are recomputed from q and k; the
  softmax gradient uses delta = rowsum(dO * O), a reduction over head_dim instead of over the keys, folded into the
  dP matmul; every product is a batched matmul with transposed operands. No (N, L) transpose, row-sum or
  subtraction is materialised and the probabilities are not kept for the backward;
- dense layers: the weight gradient dy^T x as a transposed-operand matmul instead of Transpose + MatMul;
- RMSNorm, adaLN modulation and gated residuals: closed forms, with sums over tokens as ones-row matmuls (CPU
  ReduceSum over a middle or leading axis is slow).
"""
import mindspore as ms
from mindspore import mint, nn, ops

from mg.models.expand import expand

FUSED_DEVICES = ("Ascend",)

_MM = ops.MatMul()
_MM_NT = ops.MatMul(transpose_b=True)  # a @ b^T
_MM_TN = ops.MatMul(transpose_a=True)  # a^T @ b
_BMM = ops.BatchMatMul()
_BMM_NT = ops.BatchMatMul(transpose_b=True)
_BMM_TN = ops.BatchMatMul(transpose_a=True)
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


_PLAIN_LINEAR = _RowsLinear()


def dense(x, weight, bias, fused):
    """x (..., I) @ weight (O, I)^T + bias (O,) or no bias, in the dtypes given."""
    if fused:
        return mint.nn.functional.linear(x, weight, bias)
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


@ms.constexpr
def _query_chunks(q_shape, keys):
    """(start, stop) of the query chunks; the softmax of each is complete (every chunk sees all keys)."""
    b, h, n, _ = q_shape
    rows = CHUNK_SCORES // (b * h * keys)
    rows = rows if rows > 0 else 1  # no min/max/generators: this runs inside compiled graphs too
    chunks = []
    for start in range(0, n, rows):
        chunks.append((start, start + rows if start + rows < n else n))
    return chunks


def _probabilities(q, k, bias):
    """softmax(q k^T + bias) in fp32; q is already scaled."""
    scores = _BMM_NT(q, k).astype(ms.float32)
    if bias is not None:
        scores = scores + expand(bias, scores.shape)
    return mint.softmax(scores, dim=-1)


def _chunk_out(q, k, v, bias):
    return _BMM(_probabilities(q, k, bias).astype(v.dtype), v)


def _attention_out(q, k, v, bias):
    """softmax(q k^T + bias) v, chunk by chunk; each chunk waits for the previous one's output (ops.depend), so a
    compiled graph does not run them side by side with all their score matrices alive."""
    chunks = _query_chunks(q.shape, k.shape[2])
    if len(chunks) == 1:  # no slicing: one loop for both cases made a d512x4 1024-token step ~20% slower
        return _chunk_out(q, k, v, bias)
    outs = [_chunk_out(q[:, :, :chunks[0][1]], k, v, bias)]
    for start, stop in chunks[1:]:
        outs.append(_chunk_out(ops.depend(q[:, :, start:stop], outs[-1]), k, v, bias))
    return mint.cat(outs, dim=2)


def _chunk_grads(q, k, v_ext, bias, dout, dout_ext):
    """dq, dk, dv of one query chunk: q, dout, dout_ext are the chunk's rows."""
    # _probabilities written out: under jit a function used by both construct and bprop breaks the compile of a
    # recomputed block (mg/models/dit/checkpoint.py)
    scores = _BMM_NT(q, k).astype(ms.float32)
    if bias is not None:
        scores = scores + expand(bias, scores.shape)
    probs = mint.softmax(scores, dim=-1)
    dv = _BMM_TN(probs.astype(v_ext.dtype), dout)
    dscores = (probs * _BMM_NT(dout_ext, v_ext).astype(ms.float32)).astype(q.dtype)
    return _BMM(dscores, k), _BMM_TN(dscores, q), dv


def _attention_grads(q, k, v, bias, out, dout):
    """dq, dk, dv of out = softmax(q k^T + bias) v."""
    delta = (dout.astype(ms.float32) * out.astype(ms.float32)).sum(axis=-1, keepdims=True)  # = rowsum(dP * P)
    # dP - delta as one matmul, [dO, -delta] @ [V, 1]^T, instead of a separate (N, L) subtraction
    dout_ext = mint.cat([dout, (-delta).astype(dout.dtype)], dim=-1)
    v_ext = mint.cat([v, mint.ones((*v.shape[:-1], 1), dtype=v.dtype)], dim=-1)
    # Through dout (and then each chunk through the previous one's dk): otherwise nothing orders the recomputation
    # after the forward, and under ms.jit every block's probabilities were computed early, or merged with the
    # forward's, and all kept (toy model, 4096 tokens: 5.7 -> 3.9 GB peak). A chunk's dout_ext waits for dk too:
    # ordered through q alone, every chunk's dP = dout_ext v_ext^T was computed up front and kept, the whole (N, N)
    # matrix (jitted attention gradient, 8 heads, 8192 tokens: 2696 -> 728 MiB peak over the start,
    # tools/benchmark_attention_memory.py)
    chunks = _query_chunks(q.shape, k.shape[2])
    if len(chunks) == 1:
        return _chunk_grads(ops.depend(q, dout), k, v_ext, bias, dout, dout_ext)
    stop = chunks[0][1]
    dq, dk, dv = _chunk_grads(ops.depend(q[:, :, :stop], dout), k, v_ext, bias, dout[:, :, :stop],
                              dout_ext[:, :, :stop])
    dqs = [dq]
    for start, stop in chunks[1:]:
        dq, dk_part, dv_part = _chunk_grads(ops.depend(q[:, :, start:stop], dk), k, v_ext, bias,
                                            dout[:, :, start:stop], ops.depend(dout_ext[:, :, start:stop], dk))
        dqs.append(dq)
        dk, dv = dk + dk_part, dv + dv_part
    return mint.cat(dqs, dim=2), dk, dv


class _Attention(nn.Cell):
    """softmax(q k^T) v on (B, H, N, Dh), q pre-scaled, with the hand-written backward."""

    def construct(self, q, k, v):
        return _attention_out(q, k, v, None)

    def bprop(self, q, k, v, out, dout):
        return _attention_grads(q, k, v, None, out, dout)


class _BiasedAttention(nn.Cell):
    """softmax(q k^T + bias) v with a constant additive bias (B, 1, 1, L) (key padding), hand-written backward."""

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


def attention(q, k, v, key_mask, fused):
    """Multi-head attention on (B, heads, N, head_dim) tensors, bidirectional.

    `key_mask` is None or (B, L) with 1 for real keys and 0 for padding; padded keys get no weight. A query whose keys
    are all padding returns zeros (instead of an average over padding), so padded values never leak into the output.
    """
    scale = q.shape[-1] ** -0.5
    if fused:
        drop = None if key_mask is None else (key_mask[:, None, None, :] == 0).astype(ms.uint8)
        out = ops.flash_attention_score(q, k, v, head_num=q.shape[1], attn_mask=drop, scalar_value=scale,
                                        input_layout="BNSD")
    elif key_mask is None:
        out = _PLAIN_ATTENTION(q * scale, k, v)
    else:
        bias = (1.0 - key_mask.astype(ms.float32)) * -1e9
        out = _PLAIN_BIASED_ATTENTION(q * scale, k, v, bias[:, None, None, :])
    if key_mask is not None:
        any_valid = (key_mask.astype(ms.float32).sum(axis=-1) > 0).astype(out.dtype)
        out = out * expand(any_valid[:, None, None, None], out.shape)
    return out


def replay_attention(q, k, v, saved):
    """`attention(q, k, v, None, fused=False)` in a recomputed block (mg/models/dit/checkpoint.py): returns `saved`,
    what that attention returned in the block's first forward, and differentiates as the attention does."""
    return _ATTENTION_REPLAY(q * q.shape[-1] ** -0.5, k, v, saved)
