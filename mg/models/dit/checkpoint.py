"""Activation checkpointing of a transformer block, and the one place that chooses how it is done.

On Ascend MindSpore's own `Cell.recompute()` is used. On CPU it has no effect under `ms.jit` (docs/performance.md),
so `BlockCheckpoint` does it by hand: a custom backward that runs the block's forward again, from the inputs and
the self-attention's result kept, and differentiates that. A custom backward may not read Parameters in graph mode,
so the block's weights come in as inputs and the block computes from them (`TransformerBlock.apply`).
"""
from mindspore import nn, ops

from mg.models.dit.kernels import ZEROS_LIKE, use_fused_kernels


# positions in _output_dot's arguments: all but dout (0), the text mask (5) and the saved attention (17)
_DIFFERENTIABLE = (1, 2, 3, 4) + tuple(range(6, 17))


class BlockCheckpoint(nn.Cell):
    """`TransformerBlock.apply`, keeping only its inputs and its self-attention's result for the backward.

    That result (the size of the block's input) spares the recomputation the attention, which dominates long
    sequences; everything else (projections, norms, FFN, cross-attention) is computed again. `fn` is the bound
    method, not a sub-cell, so the block's parameters keep their names. Since the weights come in as arguments, one
    checkpoint serves every block of a model (`enable_recompute`). The arguments are spelled out: under ms.jit a
    bprop cannot take *args, and a tuple of weights reaches a PyNative bprop flattened."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def construct(self, x, pos, modulation, context, context_mask, attn_norm, qkv, attn_proj, cross_norm, cross_q,
                  cross_kv, cross_proj, ffn_norm, w13, w2, modulation_table):
        return self.fn(x, pos, modulation, context, context_mask, attn_norm, qkv, attn_proj, cross_norm, cross_q,
                       cross_kv, cross_proj, ffn_norm, w13, w2, modulation_table)

    def bprop(self, x, pos, modulation, context, context_mask, attn_norm, qkv, attn_proj, cross_norm, cross_q,
              cross_kv, cross_proj, ffn_norm, w13, w2, modulation_table, out, dout):
        # every input waits for the output gradient, so that the recomputation runs in the backward and shares no
        # op with the forward: with only x waiting, the compiled graph kept what needs no x (the tiled modulation,
        # the positions, the text's projections) from the forward, ~20 MiB per d=512 block at 2048 tokens
        inputs = [ops.depend(t, dout[0]) for t in (x, pos, modulation, context, context_mask, attn_norm, qkv,
                  attn_proj, cross_norm, cross_q, cross_kv, cross_proj, ffn_norm, w13, w2, modulation_table, out[1])]
        # detached: in PyNative the saved result still leads back to this cell, and its backward would recurse
        inputs[-1] = ops.stop_gradient(inputs[-1])
        grads = ops.grad(self._output_dot, _DIFFERENTIABLE)(dout[0], *inputs)
        return (*grads[:4], ZEROS_LIKE(context_mask), *grads[4:])

    def _output_dot(self, dout, x, pos, modulation, context, context_mask, attn_norm, qkv, attn_proj, cross_norm,
                    cross_q, cross_kv, cross_proj, ffn_norm, w13, w2, modulation_table, saved_attention):
        """<fn(...), dout>: its gradient is fn's vector-Jacobian product with dout. (Not ms.vjp: it drops the
        gradient of an input that the graph holds as a constant, such as a text mask, and then bprop is short.)"""
        out = self.fn(x, pos, modulation, context, context_mask, attn_norm, qkv, attn_proj, cross_norm, cross_q,
                      cross_kv, cross_proj, ffn_norm, w13, w2, modulation_table, saved_attention)[0]
        return (out * dout).sum()


def enable_recompute(blocks, every, device_target=None):
    """Recompute every `every`-th of `blocks` (TransformerBlocks) in the backward: MindSpore's pass on Ascend,
    BlockCheckpoint elsewhere, where it must be all of them (every = 1)."""
    if use_fused_kernels(device_target):
        for i in range(0, len(blocks), every):
            blocks[i].recompute()
        return
    if every != 1:
        # a compiled graph with both kinds of block fails to build: the kernels' backwards would run both
        # directly and nested in a checkpoint's, and MindSpore cannot share a function between the two
        raise ValueError(f"model.recompute_every = {every}: on CPU recompute is every block (1) or none (0)")
    # One checkpoint for all blocks: they differ only in the weights they pass in. With a checkpoint cell per block
    # the compiled step kept ~90 MiB more per block at 64 to 4096 tokens alike: what MindSpore builds for each
    # cell's backward (with its nested gradient of the block), not activations (docs/performance.md).
    checkpoint = BlockCheckpoint(blocks[0].apply)
    for block in blocks:
        block.checkpoint = checkpoint
