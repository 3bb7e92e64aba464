"""LinGen's MATE: a self-attention replacement whose cost is linear in the number of tokens (docs/linear_attention.md).

    MATE(x) = MA(x) + TE(x), in self-attention's place in the block (adaLN gate, cross-attention and FFN unchanged)
    MA-branch  the tokens in this layer's scan order (Rotary Major Scan: the flattening order of the (t, h, w) grid
               turns from layer to layer, so tokens adjacent along any axis are adjacent in some layer's scan), after
               optional review tokens (each frame average-pooled, so the scan sees the whole video before any token),
               through a bidirectional Mamba2 (the SSD scan of mg/backends/ssd.py, once in each direction)
    TE-branch  TEmporal Swin Attention: softmax attention inside windows of few rows and columns and many frames
               (spatially adjacent, temporally medium-range tokens), the windows shifted by half every other layer

A MATE block takes its tokens in grid form (B, T, H, W, D): its scan orders and windows need the grid.
"""
import math

import numpy as np
import mindspore as ms
from mindspore import Parameter, mint, nn, ops
from mindspore.common.initializer import Uniform, Zero, initializer

from mg.backends import attention, expand, expand_summed_by_matmul, merge_heads, narrow, permute, token_axis
from mg.backends.ssd import causal_depthwise_conv, ssd_scan
from mg.models.dit.layers import Linear, RMSNorm, SelfAttention

# The Rotary Major Scan: grid axes (t, h, w) = (0, 1, 2) from the outermost to the innermost of the scan, by layer
# index modulo 4: row-major frames, column-major frames, then time innermost (row- and column-major positions)
SCAN_ORDERS = ((0, 1, 2), (0, 2, 1), (1, 2, 0), (2, 1, 0))
CONV_SIZE = 4  # Mamba2's causal depthwise convolution


# Shape arithmetic is done in constexpr helpers: generators and comprehensions inside a graph broke the compile of a
# recomputed block (mg/backends/recompute.py)
@ms.constexpr
def _scan_axes(order, inverse):
    """permute's axes from (B, T, H, W, D) to the scan's grid order (or back, if inverse)."""
    if inverse:
        order = tuple(order.index(axis) for axis in range(3))
    return (0, 1 + order[0], 1 + order[1], 1 + order[2], 4)


@ms.constexpr
def _scanned_shape(shape, grid, order):
    return (shape[0], grid[order[0]], grid[order[1]], grid[order[2]], shape[-1])


def to_scan_order(x, order):
    """(B, T, H, W, D) -> (B, N, D) with the grid axes flattened in `order` (outermost first)."""
    return permute(x, _scan_axes(order, False)).reshape(x.shape[0], -1, x.shape[-1])


def from_scan_order(x, grid, order):
    """The inverse of `to_scan_order`: (B, N, D) in `order` -> (B, T, H, W, D)."""
    return permute(x.reshape(_scanned_shape(x.shape, grid, order)), _scan_axes(order, True))


def review_tokens(x, stride):
    """(B, T, H, W, D) -> (B, T * H/stride * W/stride, D): each frame average-pooled over stride x stride tiles."""
    b, t, h, w, d = x.shape
    if h % stride or w % stride:
        raise ValueError(f"model.mate_review_stride={stride} must divide the patch grid's height and width ({h}, {w})")
    tiles = x.reshape(b, t, h // stride, stride, w // stride, stride, d)
    return mint.mean(mint.mean(tiles, dim=5), dim=3).reshape(b, -1, d)


class BidirectionalMamba2(nn.Cell):
    """Mamba2 over a token sequence in both directions: one input projection (gate z, values x, and each direction's
    B, C and step dt), each direction its own convolution, step bias, decay A and skip D; the two directions' outputs
    are summed, gated by silu(z), normalised (RMSNorm) and projected back."""

    def __init__(self, dim, inner_dim, head_dim, state_dim, step_range=(1e-3, 1e-1)):
        super().__init__()
        if inner_dim % head_dim:
            raise ValueError(f"the MA-branch's width {inner_dim} is not divisible by its head size {head_dim}")
        self.inner_dim, self.head_dim, self.state_dim = inner_dim, head_dim, state_dim
        self.heads = heads = inner_dim // head_dim
        self.in_proj = Linear(dim, 2 * inner_dim + 2 * (2 * state_dim + heads), bias=False)
        channels = inner_dim + 2 * state_dim
        self.conv_weight = Parameter(initializer(Uniform(1 / math.sqrt(CONV_SIZE)), (2, CONV_SIZE, channels),
                                                 ms.float32), name="conv_weight")
        self.conv_bias = Parameter(initializer(Zero(), (2, channels), ms.float32), name="conv_bias")
        # Mamba2's ranges, spread evenly over the heads rather than drawn: steps in `step_range` (log-spaced;
        # Mamba2's is 1e-3..1e-1) and decay rates A = -1..-16
        steps = np.geomspace(*step_range, heads)
        self.dt_bias = Parameter(ms.Tensor(np.tile(steps + np.log(-np.expm1(-steps)), (2, 1)).astype(np.float32)),
                                 name="dt_bias")
        self.a_log = Parameter(ms.Tensor(np.tile(np.log(np.linspace(1, 16, heads)), (2, 1)).astype(np.float32)),
                               name="a_log")
        self.skip = Parameter(initializer("ones", (2, heads), ms.float32), name="skip")
        self.norm = RMSNorm(inner_dim)
        self.out_proj = Linear(inner_dim, dim, bias=False)

    def weights(self):
        return (self.in_proj.weight, self.conv_weight, self.conv_bias, self.dt_bias, self.a_log, self.skip,
                self.norm.weight, self.out_proj.weight)

    def apply(self, x, review, in_proj, conv_weight, conv_bias, dt_bias, a_log, skip, norm, out_proj):
        """x (B, N, D) in scan order; review (B, R, D) tokens read before them in both directions (or None). Returns
        (B, N, D)."""
        tokens = x.shape[1]
        first = 0 if review is None else review.shape[1]
        # review tokens on both sides: the backward direction, run from the end, reads them first too
        seq = x if review is None else mint.cat([review, x, review], dim=1)
        state, heads = self.state_dim, self.heads
        # one Split (its gradient one Concat) rather than slices, whose gradients are each a zero-padded copy
        gate, values, forward_bc, forward_dt, backward_bc, backward_dt = ops.split(
            self.in_proj.apply(seq, in_proj), (self.inner_dim, self.inner_dim, 2 * state, heads, 2 * state, heads),
            axis=-1)
        per_direction = (conv_weight, conv_bias, dt_bias, a_log, skip)  # (2, ...) each: a row per direction
        forward = self.scan(narrow(mint.cat([values, forward_bc], dim=-1), 1, 0, first + tokens),
                            narrow(forward_dt, 1, 0, first + tokens), 0, first, tokens, *per_direction)
        backward = self.scan(narrow(mint.cat([values, backward_bc], dim=-1), 1, first, None),
                             narrow(backward_dt, 1, first, None), 1, 0, tokens, *per_direction)
        gated = (forward + backward) * ops.silu(narrow(gate, 1, first, first + tokens))
        return self.out_proj.apply(self.norm.apply(gated, norm), out_proj)

    def scan(self, inputs, dt, direction, first, tokens, conv_weight, conv_bias, dt_bias, a_log, skip):
        """One direction's Mamba2 (convolution, SSD scan, skip) over its inputs (B, L, values + B + C) and steps
        (B, L, heads), run from the last token to the first if `direction` is 1; its outputs for the `tokens` tokens
        from `first` on."""
        inner, state, heads = self.inner_dim, self.state_dim, self.heads
        b, length, _ = inputs.shape
        # this direction's parameters by slices, not integer indexing (which broke the compile of a recomputed block)
        this, reverse = slice(direction, direction + 1), direction == 1
        kernel = conv_weight[this].reshape(conv_weight.shape[1:]).astype(inputs.dtype)
        inputs = ops.silu(causal_depthwise_conv(inputs, kernel, conv_bias[this].reshape(-1).astype(inputs.dtype),
                                                reverse))
        x, b_in, c_in = ops.split(inputs, (inner, state, state), axis=-1)
        dt = ops.softplus(dt + dt_bias[this].astype(inputs.dtype))
        decay_rate = -mint.exp(a_log[this].reshape(-1)).astype(inputs.dtype)
        y = ssd_scan(x.reshape(b, length, heads, self.head_dim), dt, decay_rate, b_in, c_in, reverse=reverse)
        # the skip: x times each head's D, repeated over the head's channels and then over the tokens
        skip_row = expand(skip[this].astype(inputs.dtype).reshape(heads, 1), (heads, self.head_dim)).reshape(1, inner)
        y = y.reshape(b, length, inner) + x * expand_summed_by_matmul(skip_row, (b * length, inner)).reshape(x.shape)
        return narrow(y, 1, first, first + tokens)


@ms.constexpr
def _window_layout(grid, window, shifted):
    """(window, front padding, end padding, key mask or None) of a grid: the window clipped to the grid; a shifted
    layer's windows start half a window earlier (padding, not wrapping round); the mask (windows, window tokens)
    marks real tokens (1) and padding (0)."""
    window = tuple(min(w, g) for w, g in zip(window, grid))
    front = tuple(w // 2 if shifted and w < g else 0 for w, g in zip(window, grid))
    end = tuple(-(g + f) % w for g, f, w in zip(grid, front, window))
    if not any(front) and not any(end):
        return window, front, end, None
    valid = np.zeros(tuple(f + g + e for f, g, e in zip(front, grid, end)), np.float32)
    valid[front[0]:front[0] + grid[0], front[1]:front[1] + grid[1], front[2]:front[2] + grid[2]] = 1
    counts = tuple(s // w for s, w in zip(valid.shape, window))
    valid = valid.reshape(counts[0], window[0], counts[1], window[1], counts[2], window[2])
    return window, front, end, ms.Tensor(valid.transpose(0, 2, 4, 1, 3, 5).reshape(int(np.prod(counts)), -1))


def _pad_axis(x, axis, front, end):
    """x zero-padded with `front` and `end` slices along `axis`."""
    if front:
        shape = list(x.shape)
        shape[axis] = front
        x = mint.cat([mint.zeros(tuple(shape), dtype=x.dtype), x], dim=axis)
    if end:
        shape = list(x.shape)
        shape[axis] = end
        x = mint.cat([x, mint.zeros(tuple(shape), dtype=x.dtype)], dim=axis)
    return x


@ms.constexpr
def _window_plan(shape, axis, grid, window, front, end):
    """How `to_windows` cuts a tensor of `shape` with tokens on `axis`, and `from_windows` puts it back: (grid shape,
    split shape, permute axes, the windows' shape, the moved shape, the inverse axes, the padded grid shape).
    Split: (*lead, c0, w0, c1, w1, c2, w2, *tail); moved: (B, c0, c1, c2, *lead[1:], w0, w1, w2, *tail)."""
    lead, tail = tuple(shape[:axis]), tuple(shape[axis + 1:])
    padded = tuple(f + g + e for f, g, e in zip(front, grid, end))
    counts = tuple(s // w for s, w in zip(padded, window))
    split = lead + (counts[0], window[0], counts[1], window[1], counts[2], window[2]) + tail
    p = axis
    axes = (0, p, p + 2, p + 4) + tuple(range(1, axis)) + (p + 1, p + 3, p + 5) + tuple(range(p + 6, len(split)))
    windows = (shape[0] * counts[0] * counts[1] * counts[2],) + lead[1:] + (window[0] * window[1] * window[2],) + tail
    moved = tuple(split[a] for a in axes)
    inverse = tuple(int(i) for i in np.argsort(axes))
    return lead + tuple(grid) + tail, split, axes, windows, moved, inverse, lead + padded + tail


def to_windows(t, grid, window, front, end):
    """Attention's q, k or v (tokens on axis `token_axis()`, in the grid's order) -> the same layout with the batch
    axis holding every window of every sample and the token axis a window's tokens."""
    axis = token_axis()
    grid_shape, split, axes, windows, _, _, _ = _window_plan(t.shape, axis, grid, window, front, end)
    padded = t.reshape(grid_shape)
    for i in range(3):
        padded = _pad_axis(padded, axis + i, front[i], end[i])
    return permute(padded.reshape(split), axes).reshape(windows)


def from_windows(t, shape, grid, window, front, end):
    """The inverse of `to_windows`: windows -> attention's layout of `shape` (the tensor `to_windows` was given)."""
    axis = token_axis()
    _, _, _, _, moved, inverse, padded_shape = _window_plan(shape, axis, grid, window, front, end)
    x = permute(t.reshape(moved), inverse).reshape(padded_shape)
    for i in range(3):
        x = narrow(x, axis + i, front[i], front[i] + grid[i])
    return x.reshape(shape)


class TemporalSwinAttention(nn.Cell):
    """Softmax attention within (frames, rows, columns) windows of the token grid; `shifted`: windows offset by half
    a window (this layer's windows straddle the previous layer's). q, k and v are projected from all tokens at once
    and then cut into windows (a projection per window would repeat its weights per window on the plain path)."""

    def __init__(self, dim, num_heads, window, shifted):
        super().__init__()
        self.attn = SelfAttention(dim, num_heads)
        self.window, self.shifted = tuple(window), shifted

    def weights(self):
        return self.attn.weights()

    def apply(self, x, grid, qkv, proj):
        """x (B, N, D) in the grid's order -> (B, N, D)."""
        window, front, end, mask = _window_layout(grid, self.window, self.shifted)
        q, k, v = self.attn.heads(x, qkv)
        shape = q.shape
        q, k, v = (to_windows(q, grid, window, front, end), to_windows(k, grid, window, front, end),
                   to_windows(v, grid, window, front, end))
        key_mask = None if mask is None else expand(mask, (x.shape[0],) + mask.shape).reshape(-1, mask.shape[1])
        attended = attention(q, k, v, key_mask, self.attn.head_dim)
        return merge_heads(self.attn.proj, from_windows(attended, shape, grid, window, front, end), proj)


class MATE(nn.Cell):
    """The MA-branch plus the TE-branch for layer `layer` (its scan order and window shift)."""

    def __init__(self, dim, num_heads, layer, state_dim, head_dim, window, review_stride, step_range):
        super().__init__()
        self.order = SCAN_ORDERS[layer % len(SCAN_ORDERS)]
        self.variant = layer % len(SCAN_ORDERS)  # blocks alike in this are computed by the same function
        self.review_stride = review_stride
        self.mamba = BidirectionalMamba2(dim, dim, head_dim, state_dim, step_range)
        self.tesa = TemporalSwinAttention(dim, num_heads, window, shifted=layer % 2 == 1)

    def weights(self):
        return (*self.mamba.weights(), *self.tesa.weights())

    def apply(self, x, in_proj, conv_weight, conv_bias, dt_bias, a_log, skip, norm, out_proj, qkv, proj, saved=None):
        """x (B, T, H, W, D) -> ((B, N, D) in the grid's order, a placeholder for what a recomputed block keeps:
        MATE keeps nothing, since recomputing it costs linear time; `saved` is that placeholder)."""
        review = review_tokens(x, self.review_stride) if self.review_stride else None
        scanned = self.mamba.apply(to_scan_order(x, self.order), review, in_proj, conv_weight, conv_bias, dt_bias,
                                   a_log, skip, norm, out_proj)
        tokens = x.reshape(x.shape[0], -1, x.shape[-1])
        ma = from_scan_order(scanned, x.shape[1:4], self.order).reshape(tokens.shape)
        return ma + self.tesa.apply(tokens, x.shape[1:4], qkv, proj), mint.zeros((1,), dtype=x.dtype)
