"""Mamba2's heavy operations: the selective scan in its state-space-duality (SSD) form (chunked matrix products, no
loop over tokens) and the causal depthwise convolution before it.

The recurrence (per sample and head; scalar decay per head, as Mamba2):

    h_t = exp(dt_t * A) h_{t-1} + dt_t * x_t B_t^T        h: (P, N), x_t: (P,), B_t, C_t: (N,)
    y_t = h_t C_t

Within a chunk of Q tokens it is a masked matrix product, y = (L o C B^T) (dt x) with L[i, j] = exp(a_{j+1} + ... +
a_i) for j <= i (a = dt * A); each chunk's end state is a sum of its inputs weighted by their decay to the chunk's end;
the state entering each chunk is the same kind of scan one level up, over chunks (with chunk states as inputs and the
chunks' total decays), done the same way in blocks of chunks, so that no level costs more than linear in the tokens.
Everything is batched matmuls, exp and elementwise products; MindSpore differentiates it (the backward is the same
kind of products, checked against a reverse-time recurrence in tests/backends/test_ssd.py).
"""
import numpy as np
import mindspore as ms
from mindspore import mint, nn, ops

from mg.backends.dense import BMM, BMM_NT, BMM_TN, MM
from mg.backends.tensors import expand, permute

CHUNK = 64        # tokens per chunk: the intra-chunk products cost Q per token, the chunk states P * N per chunk
STATE_BLOCK = 64  # chunks per block in the scan over chunk states


@ms.constexpr
def _triangle(size, strict):
    """(size, size) lower-triangular ones: [i, j] = 1 for j <= i (j < i if strict)."""
    return ms.Tensor(np.tril(np.ones((size, size), np.float32), -1 if strict else 0))


@ms.constexpr
def _upper_ones(size):
    """(size, size) with [k, i] = 1 for k <= i: a @ it is the inclusive cumulative sum of a's last axis."""
    return ms.Tensor(np.triu(np.ones((size, size), np.float32)))


def _cumsum(a):
    """Inclusive cumulative sum over the last axis, as a matmul (short axes: Q or STATE_BLOCK)."""
    return mint.matmul(a, _upper_ones(a.shape[-1]).astype(a.dtype))


def _decay_matrix(row_cum, col_cum, strict):
    """exp(row_cum_i - col_cum_j) for j <= i (j < i if strict), else 0: (..., Q) and (..., Q) -> (..., Q, Q). Every
    kept exponent is <= 0 (cumulative sums of log decays); the masked ones are clipped so that exp cannot overflow."""
    q = row_cum.shape[-1]
    shape = row_cum.shape + (q,)
    diff = expand(row_cum[..., :, None], shape) - expand(col_cum[..., None, :], shape)
    return mint.exp(mint.clamp(diff, max=0.0)) * expand(_triangle(q, strict).astype(diff.dtype), shape)


def _pad_axis(x, axis, multiple):
    """x zero-padded at the end of `axis` to a multiple of `multiple`."""
    extra = -x.shape[axis] % multiple
    if not extra:
        return x
    shape = list(x.shape)
    shape[axis] = extra
    return mint.cat([x, mint.zeros(tuple(shape), dtype=x.dtype)], dim=axis)


def _entering_states(states, log_decay):
    """The state entering each chunk i: the sum over chunks j < i of exp(log_decay[j+1] + ... + log_decay[i-1]) *
    states[j]. states (B, H, K, F): each chunk's end state from its own tokens; log_decay (B, H, K): its total."""
    k = log_decay.shape[-1]
    cum = _cumsum(log_decay) if k <= STATE_BLOCK else None
    if cum is not None:
        return BMM(_decay_matrix(cum - log_decay, cum, True), states)
    # in blocks of STATE_BLOCK chunks: the scan inside each block, then the same scan over the blocks' end states
    b, h, _, f = states.shape
    states, log_decay = _pad_axis(states, 2, STATE_BLOCK), _pad_axis(log_decay, 2, STATE_BLOCK)
    blocks = states.shape[2] // STATE_BLOCK
    states = states.reshape(b, h, blocks, STATE_BLOCK, f)
    log_decay = log_decay.reshape(b, h, blocks, STATE_BLOCK)
    cum = _cumsum(log_decay)
    before = cum - log_decay  # decay from the block's start to each chunk's start
    inside = BMM(_decay_matrix(before, cum, True), states)
    block_ends = BMM(mint.exp(cum[..., -1:] - cum)[..., None, :], states)[..., 0, :]  # (B, H, blocks, F)
    entering = _entering_states(block_ends, cum[..., -1])
    out = inside + expand(mint.exp(before)[..., None], inside.shape) * expand(entering[..., None, :], inside.shape)
    return out.reshape(b, h, blocks * STATE_BLOCK, f)[:, :, :k]


def ssd_scan(x, dt, a, b, c, chunk=CHUNK):
    """y of the recurrence above for x (B, L, H, P), dt (B, L, H) > 0, a (H,) < 0, b and c (B, L, N) (one group: every
    head reads the same B and C, as Mamba2's default). Returns y (B, L, H, P). L is padded to a multiple of `chunk`
    (zero dt and x: the padding at the end changes no earlier output)."""
    batch, length, heads, p = x.shape
    n = b.shape[-1]
    x, dt, b, c = _pad_axis(x, 1, chunk), _pad_axis(dt, 1, chunk), _pad_axis(b, 1, chunk), _pad_axis(c, 1, chunk)
    k = x.shape[1] // chunk
    xdt = permute((x * dt[..., None]).reshape(batch, k, chunk, heads, p), (0, 3, 1, 2, 4))     # (B, H, K, Q, P)
    log_decay = permute(dt.reshape(batch, k, chunk, heads), (0, 3, 1, 2)) * a.reshape(1, heads, 1, 1)
    cum = _cumsum(log_decay)                                                                      # (B, H, K, Q)
    b, c = b.reshape(batch, 1, k, chunk, n), c.reshape(batch, 1, k, chunk, n)
    b_heads, c_heads = expand(b, (batch, heads, k, chunk, n)), expand(c, (batch, heads, k, chunk, n))
    # inside each chunk: y_i = sum_{j <= i} exp(cum_i - cum_j) (c_i . b_j) dt_j x_j
    scores = expand(BMM_NT(c, b), (batch, heads, k, chunk, chunk)) * _decay_matrix(cum, cum, False)
    y = BMM(scores, xdt)
    # each chunk's end state from its own tokens (P, N), then the state entering every chunk
    to_end = mint.exp(cum[..., -1:] - cum)
    own = BMM_TN(xdt, b_heads * expand(to_end[..., None], b_heads.shape))                        # (B, H, K, P, N)
    entering = _entering_states(own.reshape(batch, heads, k, p * n), cum[..., -1]).reshape(batch, heads, k, p, n)
    # what the entering state adds: exp(cum_i) * state c_i
    y = y + BMM_NT(c_heads, entering) * expand(mint.exp(cum)[..., None], y.shape)
    return permute(y, (0, 2, 3, 1, 4)).reshape(batch, k * chunk, heads, p)[:, :length]


def _column_sums(x):
    """(B, L, C) -> (C,) as a ones-row matmul (CPU ReduceSum over leading axes is slow)."""
    rows = x.reshape(-1, x.shape[-1])
    return MM(mint.ones((1, rows.shape[0]), dtype=x.dtype), rows).reshape(-1)


class _CausalDepthwiseConv(nn.Cell):
    """y_t = sum_k w[k] x_{t-K+1+k} + b per channel, with a hand-written backward (autodiff reduced every tap's
    weight gradient with ReduceSum over samples and tokens)."""

    # construct and bprop share no helper and index no tensor by an integer (slices instead): under jit either broke
    # the compile of a recomputed block (mg/backends/recompute.py)
    def construct(self, x, weight, bias):
        size, (b, length, c) = weight.shape[0], x.shape
        padded = mint.cat([mint.zeros((b, size - 1, c), dtype=x.dtype), x], dim=1)
        out = expand(bias, x.shape)
        for k in range(size):
            out = out + padded[:, k:k + length] * expand(weight[k:k + 1], x.shape)
        return out

    def bprop(self, x, weight, bias, out, dout):
        size, (b, length, c) = weight.shape[0], x.shape
        # dx_t = sum_k w[k] dout_{t+K-1-k}: dout padded at the end, the taps reversed
        dpad = mint.cat([dout, mint.zeros((b, size - 1, c), dtype=x.dtype)], dim=1)
        padded = mint.cat([mint.zeros((b, size - 1, c), dtype=x.dtype), x], dim=1)
        dx = dpad[:, size - 1:size - 1 + length] * expand(weight[:1], x.shape)
        taps = [_column_sums(padded[:, :length] * dout)]
        for k in range(1, size):
            dx = dx + dpad[:, size - 1 - k:size - 1 - k + length] * expand(weight[k:k + 1], x.shape)
            taps.append(_column_sums(padded[:, k:k + length] * dout))
        return dx, _STACK(taps), _column_sums(dout)


_STACK = ops.Stack()  # a primitive instance: ops.stack makes one inside the graph, which fails in a bprop under jit
_CONV = _CausalDepthwiseConv()


def causal_depthwise_conv(x, weight, bias):
    """Mamba2's causal depthwise convolution over tokens: x (B, L, C), weight (K, C), bias (C,) -> (B, L, C)."""
    return _CONV(x, weight, bias)
