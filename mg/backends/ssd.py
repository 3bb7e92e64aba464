"""Mamba2's heavy operations: the selective scan in its state-space-duality (SSD) form (chunked matrix products, no
loop over tokens) and the causal depthwise convolution before it, each also run from the last token to the first.

The recurrence (per sample and head; scalar decay per head, as Mamba2):

    h_t = exp(dt_t * A) h_{t-1} + dt_t * x_t B_t^T        h: (P, N), x_t: (P,), B_t, C_t: (N,)
    y_t = h_t C_t

Within a chunk of Q tokens it is a masked matrix product, y = (L o C B^T) (dt x) with L[i, j] = exp(a_{j+1} + ... +
a_i) for j <= i (a = dt * A); each chunk's end state is a sum of its inputs weighted by their decay to the chunk's end;
the state entering each chunk is the same kind of scan one level up, over chunks (with chunk states as inputs and the
chunks' total decays), done the same way in blocks of chunks, so that no level costs more than linear in the tokens.
Everything is batched matmuls, exp and elementwise products; MindSpore differentiates it (the backward is the same
kind of products, checked against a reverse-time recurrence in tests/backends/test_ssd.py).

Run in reverse (the recurrence over the tokens from the last to the first, as a bidirectional Mamba's backward
direction) the same products apply with every cumulative sum taken from the end and every triangle transposed:
L[i, j] = exp(a_i + ... + a_{j-1}) for j >= i. This equals flipping the inputs and the output, without the flips.
"""
import numpy as np
import mindspore as ms
from mindspore import mint, nn, ops

from mg.backends.dense import BMM, BMM_NT, BMM_TN, MM
from mg.backends.tensors import expand, expand_summed_by_matmul, narrow, permute

CHUNK = 64        # tokens per chunk: the intra-chunk products cost Q per token, the chunk states P * N per chunk
STATE_BLOCK = 64  # chunks per block in the scan over chunk states


@ms.constexpr
def _masked_out(size, strict, reverse):
    """(size, size): 0 where j <= i (j < i if strict; j >= i or j > i if reverse), a large negative number elsewhere
    (exp gives 0 there)."""
    keep = np.tril(np.ones((size, size), bool), -1 if strict else 0)
    return ms.Tensor(np.where(keep.T if reverse else keep, 0.0, -1e30).astype(np.float32))


@ms.constexpr
def _cumsum_matrix(size, reverse):
    """(size, size): a @ it is the inclusive cumulative sum of a's last axis, from the start (from the end if
    reverse)."""
    upper = np.triu(np.ones((size, size), np.float32))
    return ms.Tensor(upper.T if reverse else upper)


def _cumsum(a, reverse):
    """Inclusive cumulative sum over the last axis, as a matmul (short axes: Q or STATE_BLOCK)."""
    return mint.matmul(a, _cumsum_matrix(a.shape[-1], reverse).astype(a.dtype))


def _total(cum, reverse):
    """The axis's total from its inclusive cumulative sum: the last entry (the first if reverse), kept as an axis."""
    return narrow(cum, -1, 0, 1) if reverse else narrow(cum, -1, cum.shape[-1] - 1, cum.shape[-1])


def _decay_matrix(row_cum, col_cum, strict, reverse):
    """exp(row_cum_i - col_cum_j) where `_masked_out` keeps (i, j), else 0: (..., Q) and (..., Q) -> (..., Q, Q).
    Every kept exponent is <= 0 (cumulative sums of log decays); the others get a large negative offset before exp,
    so that exp cannot overflow there and gives 0 (a mask added, not a clamp and a mask multiplied: two fewer
    passes)."""
    q = row_cum.shape[-1]
    shape = row_cum.shape + (q,)
    rows = expand_summed_by_matmul(row_cum[..., :, None], shape)
    diff = rows - expand_summed_by_matmul(col_cum[..., None, :], shape)
    return mint.exp(diff + expand(_masked_out(q, strict, reverse).astype(diff.dtype), shape))


def _pad_axis(x, axis, multiple):
    """x zero-padded at the end of `axis` to a multiple of `multiple`."""
    extra = -x.shape[axis] % multiple
    if not extra:
        return x
    shape = list(x.shape)
    shape[axis] = extra
    return mint.cat([x, mint.zeros(tuple(shape), dtype=x.dtype)], dim=axis)


def _entering_states(states, log_decay, reverse):
    """The state entering each chunk i: the sum over chunks j < i (j > i if reverse) of the decays of the chunks
    between them times states[j]. states (B, H, K, F): each chunk's state from its own tokens; log_decay (B, H, K):
    each chunk's total."""
    k = log_decay.shape[-1]
    cum = _cumsum(log_decay, reverse) if k <= STATE_BLOCK else None
    if cum is not None:
        return BMM(_decay_matrix(cum - log_decay, cum, True, reverse), states)
    # in blocks of STATE_BLOCK chunks: the scan inside each block, then the same scan over the blocks' own states
    # (padding chunks carry no state and no decay, so in either direction they change nothing)
    b, h, _, f = states.shape
    states, log_decay = _pad_axis(states, 2, STATE_BLOCK), _pad_axis(log_decay, 2, STATE_BLOCK)
    blocks = states.shape[2] // STATE_BLOCK
    states = states.reshape(b, h, blocks, STATE_BLOCK, f)
    log_decay = log_decay.reshape(b, h, blocks, STATE_BLOCK)
    cum = _cumsum(log_decay, reverse)
    before = cum - log_decay  # decay from the block's first chunk in scan order to each chunk, exclusive
    inside = BMM(_decay_matrix(before, cum, True, reverse), states)
    total = _total(cum, reverse)
    block_states = BMM(mint.exp(total - cum)[..., None, :], states)[..., 0, :]  # (B, H, blocks, F)
    entering = _entering_states(block_states, total[..., 0], reverse)
    out = inside + (expand_summed_by_matmul(mint.exp(before)[..., None], inside.shape)
                    * expand_summed_by_matmul(entering[..., None, :], inside.shape))
    return narrow(out.reshape(b, h, blocks * STATE_BLOCK, f), 2, 0, k)


def ssd_scan(x, dt, a, b, c, chunk=CHUNK, reverse=False):
    """y of the recurrence above for x (B, L, H, P), dt (B, L, H) > 0, a (H,) < 0, b and c (B, L, N) (one group: every
    head reads the same B and C, as Mamba2's default), run from the last token to the first if `reverse`. Returns y
    (B, L, H, P). L is padded to a multiple of `chunk` (zero dt and x: the padding at the end carries no state, so it
    changes no other output in either direction)."""
    batch, length, heads, p = x.shape
    n = b.shape[-1]
    x, dt, b, c = _pad_axis(x, 1, chunk), _pad_axis(dt, 1, chunk), _pad_axis(b, 1, chunk), _pad_axis(c, 1, chunk)
    k = x.shape[1] // chunk
    xdt = x * expand_summed_by_matmul(dt[..., None], x.shape)
    xdt = permute(xdt.reshape(batch, k, chunk, heads, p), (0, 3, 1, 2, 4))                      # (B, H, K, Q, P)
    log_decay = permute(dt.reshape(batch, k, chunk, heads), (0, 3, 1, 2)) * a.reshape(1, heads, 1, 1)
    cum = _cumsum(log_decay, reverse)                                                            # (B, H, K, Q)
    b, c = b.reshape(batch, 1, k, chunk, n), c.reshape(batch, 1, k, chunk, n)
    b_heads = expand_summed_by_matmul(b, (batch, heads, k, chunk, n))
    c_heads = expand_summed_by_matmul(c, (batch, heads, k, chunk, n))
    # inside each chunk: y_i = sum_{j <= i} exp(cum_i - cum_j) (c_i . b_j) dt_j x_j (j >= i if reverse)
    scores = expand_summed_by_matmul(BMM_NT(c, b), (batch, heads, k, chunk, chunk))
    y = BMM(scores * _decay_matrix(cum, cum, False, reverse), xdt)
    # each chunk's state from its own tokens at its last token (first if reverse), then the state entering every chunk
    total = _total(cum, reverse)
    to_end = mint.exp(total - cum)
    own = BMM_TN(xdt, b_heads * expand_summed_by_matmul(to_end[..., None], b_heads.shape))      # (B, H, K, P, N)
    entering = _entering_states(own.reshape(batch, heads, k, p * n), total[..., 0], reverse)
    # what the entering state adds: exp(cum_i) * state c_i
    entering = BMM_NT(c_heads, entering.reshape(batch, heads, k, p, n))
    y = y + entering * expand_summed_by_matmul(mint.exp(cum)[..., None], y.shape)
    return narrow(permute(y, (0, 2, 3, 1, 4)).reshape(batch, k * chunk, heads, p), 1, 0, length)


def _column_sums(x):
    """(B, L, C) -> (C,) as a ones-row matmul (CPU ReduceSum over leading axes is slow)."""
    rows = x.reshape(-1, x.shape[-1])
    return MM(mint.ones((1, rows.shape[0]), dtype=x.dtype), rows).reshape(-1)


class _CausalDepthwiseConv(nn.Cell):
    """y_t = sum_k w[k] x_{t-K+1+k} + b per channel, or if `reverse` causal from the end (y_t = sum_k w[k] x_{t+K-1-k}
    + b), with a hand-written backward (autodiff reduced every tap's weight gradient with ReduceSum over samples and
    tokens)."""

    def __init__(self, reverse):
        super().__init__()
        self.reverse = reverse

    # construct and bprop share no helper and index no tensor by an integer (slices instead): under jit either broke
    # the compile of a recomputed block (mg/backends/recompute.py)
    def construct(self, x, weight, bias):
        size, (b, length, c) = weight.shape[0], x.shape
        zeros = mint.zeros((b, size - 1, c), dtype=x.dtype)
        if self.reverse:
            padded = mint.cat([x, zeros], dim=1)
        else:
            padded = mint.cat([zeros, x], dim=1)
        out = expand(bias, x.shape)
        for k in range(size):
            start = size - 1 - k if self.reverse else k
            out = out + padded[:, start:start + length] * expand(weight[k:k + 1], x.shape)
        return out

    def bprop(self, x, weight, bias, out, dout):
        size, (b, length, c) = weight.shape[0], x.shape
        # dx_t = sum_k w[k] dout_{t+K-1-k} (dout_{t-K+1+k} if reverse): dout padded at the other end than x
        zeros = mint.zeros((b, size - 1, c), dtype=x.dtype)
        if self.reverse:
            padded, dpad = mint.cat([x, zeros], dim=1), mint.cat([zeros, dout], dim=1)
        else:
            padded, dpad = mint.cat([zeros, x], dim=1), mint.cat([dout, zeros], dim=1)
        start, dstart = (size - 1, 0) if self.reverse else (0, size - 1)
        dx = dpad[:, dstart:dstart + length] * expand(weight[:1], x.shape)
        taps = [_column_sums(padded[:, start:start + length] * dout)]
        for k in range(1, size):
            start, dstart = (size - 1 - k, k) if self.reverse else (k, size - 1 - k)
            dx = dx + dpad[:, dstart:dstart + length] * expand(weight[k:k + 1], x.shape)
            taps.append(_column_sums(padded[:, start:start + length] * dout))
        return dx, _STACK(taps), _column_sums(dout)


_STACK = ops.Stack()  # a primitive instance: ops.stack makes one inside the graph, which fails in a bprop under jit
_CONV, _REVERSE_CONV = _CausalDepthwiseConv(reverse=False), _CausalDepthwiseConv(reverse=True)


def causal_depthwise_conv(x, weight, bias, reverse=False):
    """Mamba2's causal depthwise convolution over tokens (causal from the end if `reverse`): x (B, L, C), weight (K, C),
    bias (C,) -> (B, L, C)."""
    if reverse:
        return _REVERSE_CONV(x, weight, bias)
    return _CONV(x, weight, bias)
