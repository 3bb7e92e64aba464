"""Multi-head attention: flash attention on Ascend, and on the plain path a query-chunked softmax attention with a
FlashAttention-style hand-written backward.

What it computes (both paths): out = softmax(q k^T / sqrt(head_dim) + mask) v per head, bidirectional; keys whose
mask is 0 (padding) get no weight, and a query whose keys are all padding gets zeros rather than an average over
padding. The two paths lay the heads out differently, each so that no transpose is needed: the fused kernel takes
token rows (B, N, H * Dh), the projections' own output; the plain path takes (B, H, Dh, N), each head's features
before its tokens, which the q/k/v projection writes directly as w x^T and the output projection reads as a
transposed operand (mg/backends/dense.py). Splitting rows into (B, H, N, Dh) heads took a transpose per tensor,
which under ms.jit on CPU is copied element by element (21% of a d512x4 compiled step).

The plain backward recomputes the probabilities from q and k chunk by chunk instead of keeping them, forms the
softmax gradient with delta = rowsum(dO * O) (a reduction over head_dim, folded into the dP matmul) and uses only
batched matmuls with transposed operands: no (N, L) transpose, row-sum or subtraction is materialised.
"""
import mindspore as ms
from mindspore import mint, nn, ops

from mg.backends.device import fused
from mg.backends.dense import BMM, BMM_NT, BMM_TN, FROM_FEATURE_MAJOR, TO_FEATURE_MAJOR
from mg.backends.tensors import expand, split_equal

ZEROS_LIKE = ops.ZerosLike()  # not ops.zeros_like, a Python function: see _chunk_grads

# Score elements (B * heads * queries * keys) computed at a time: longer sequences run in query chunks, so the
# (N, L) matrices of one chunk (128 MiB each in fp32) exist at once, not those of the whole sequence. 2^24 was
# leaner at 4096 tokens and heavier at 8192 in the training step (docs/performance.md), so this stays
CHUNK_SCORES = 2 ** 25


@ms.constexpr
def token_axis():
    """The axis of the tokens in attention's q, k, v and output: 1 for rows (fused), 3 for (B, H, Dh, N) (plain)."""
    return 1 if fused() else 3


def split_heads(linear, x, weight, parts, head_dim):
    """The `parts` equal outputs of projection `linear` (a layer whose `apply(x, weight, layout)` computes the
    projection) of tokens x (B, N, D), e.g. q, k, v, as heads of `head_dim` features in attention's layout."""
    if fused():
        return split_equal(linear.apply(x, weight), parts, -1) if parts > 1 else (linear.apply(x, weight),)
    out = linear.apply(x, weight, layout=TO_FEATURE_MAJOR)
    b, _, n = out.shape
    out = out.reshape(b, -1, head_dim, n)
    return split_equal(out, parts, 1) if parts > 1 else (out,)


def merge_heads(linear, attended, weight):
    """Projection `linear` of attention's output (in attention's layout) back to token rows (B, N, D_out)."""
    if fused():
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
    scores = BMM_TN(q, k).astype(ms.float32)
    if bias is not None:
        scores = scores + expand(bias, scores.shape)
    return mint.softmax(scores, dim=-1)


def _chunk_out(q, k, v, bias):
    return BMM_NT(v, _probabilities(q, k, bias).astype(v.dtype))


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
    # recomputed block (mg/backends/recompute.py)
    scores = BMM_TN(q, k).astype(ms.float32)
    if bias is not None:
        scores = scores + expand(bias, scores.shape)
    probs = mint.softmax(scores, dim=-1)
    dv = BMM(dout, probs.astype(dout.dtype))
    dscores = (probs * BMM_TN(dout_ext, v_ext).astype(ms.float32)).astype(q.dtype)
    return BMM_NT(k, dscores), BMM(q, dscores), dv


def _attention_grads(q, k, v, bias, out, dout):
    """dq, dk, dv of out = v softmax(q^T k + bias)^T."""
    b, h, head_dim, n = out.shape
    # delta = rowsum(dP * P) = sum of dO * O over head_dim, as a ones-row matmul (that axis is not the last)
    prod = dout.astype(ms.float32) * out.astype(ms.float32)
    delta = BMM(mint.ones((b, h, 1, head_dim), dtype=ms.float32), prod)
    # dP - delta as one matmul, [dO; -delta]^T [V; 1], instead of a separate (N, L) subtraction
    dout_ext = mint.cat([dout, (-delta).astype(dout.dtype)], dim=2)
    v_ext = mint.cat([v, mint.ones((b, h, 1, v.shape[3]), dtype=v.dtype)], dim=2)
    # Through dout (and then each chunk through the previous one's dk): otherwise nothing orders the recomputation
    # after the forward, and under ms.jit every block's probabilities were computed early, or merged with the
    # forward's, and all kept (toy model, 4096 tokens: 5.7 -> 3.9 GB peak). A chunk's dout_ext waits for dk too:
    # ordered through q alone, every chunk's dP = dout_ext^T v_ext was computed up front and kept, the whole (N, N)
    # matrix (tools/benchmark_attention_memory.py)
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
    """Gives back `saved`, the output of the same attention computed before, and differentiates as `_Attention`
    does from q, k, v and that output: a recomputed block computes no score matrices."""

    def construct(self, q, k, v, saved):
        return saved

    def bprop(self, q, k, v, saved, out, dout):
        return (*_attention_grads(q, k, v, None, saved, dout), ZEROS_LIKE(saved))


_PLAIN_ATTENTION = _Attention()
_PLAIN_BIASED_ATTENTION = _BiasedAttention()
_ATTENTION_REPLAY = _AttentionReplay()


def attention(q, k, v, key_mask, head_dim):
    """Bidirectional multi-head attention of q (queries), k, v (keys) in attention's layout (module docstring);
    the result has q's layout. `key_mask` is None or (B, L) with 1 for real keys and 0 for padding."""
    if fused():
        drop = None
        if key_mask is not None:
            drop = (key_mask[:, None, None, :] == 0).astype(ms.uint8)
            drop = ops.broadcast_to(drop, (q.shape[0], 1, q.shape[1], k.shape[1]))
        out = ops.flash_attention_score(q, k, v, head_num=q.shape[-1] // head_dim, attn_mask=drop,
                                        scalar_value=head_dim ** -0.5, input_layout="BSH")
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
    """`attention(q, k, v, None, head_dim)` on the plain path when its result `saved` is already known (a
    recomputed block, mg/backends/recompute.py): returns `saved` and differentiates as the attention does."""
    return _ATTENTION_REPLAY(q * q.shape[2] ** -0.5, k, v, saved)
