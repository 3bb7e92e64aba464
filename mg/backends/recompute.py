"""Activation checkpointing of transformer blocks, applied to a model from outside (`apply_recompute`).

Ascend, and PyNative anywhere: MindSpore's own `Cell.recompute()`. Compiled on CPU that pass saves almost nothing
(its recomputation is not ordered after the backward reaches the block; docs/performance.md), so there
`BlockCheckpoint` does it by hand: a custom backward that runs the block's forward again from its inputs and
differentiates that. Under ms.jit a custom backward may not read Parameters, so the block must be computable from
weights it is given: a block offers `weights()` (its weights as a tuple) and `forward(inputs, weights, kept=None)`
returning (output, kept), where `kept` is what the block chooses to keep for a recomputation (the DiT block keeps
its self-attention's result: attention dominates long sequences, and its output is the size of the block's input).
Since the weights come in as arguments, one checkpoint cell serves every block of a model: with a cell per block
the compiled step kept ~90 MiB more per block at any token count (docs/performance.md). Blocks that differ in more
than their weights (MATE's scan orders and windows turn with the layer) say so by a `variant`; each variant gets
its own checkpoint cell.
"""
from mindspore import nn, ops

from mg.backends.device import fused


class BlockCheckpoint(nn.Cell):
    """Calls `fn(inputs, weights)` -> (output, kept); keeps only the inputs, weights and `kept` for the backward,
    which recomputes `fn(inputs, weights, kept)`. `fn` is a bound method (not a sub-cell), so the block's
    parameters keep their names."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def construct(self, inputs, weights):
        return self.fn(inputs, weights)

    def bprop(self, inputs, weights, out, dout):
        # Every input waits for the output gradient, so that the recomputation runs in the backward and shares no
        # op with the forward: with only x waiting, the compiled graph kept what needs no x (the tiled modulation,
        # the positions, the text's projections) from the forward, ~20 MiB per d=512 block at 2048 tokens.
        grad_out = dout[0]
        inputs = tuple([ops.depend(t, grad_out) for t in inputs])
        weights = tuple([ops.depend(w, grad_out) for w in weights])
        # detached: in PyNative the kept result still leads back to this cell, and its backward would recurse
        kept = ops.stop_gradient(ops.depend(out[1], grad_out))
        return ops.grad(self._output_dot, (1, 2))(grad_out, inputs, weights, kept)

    def _output_dot(self, grad_out, inputs, weights, kept):
        """<fn(...), grad_out>: its gradient is fn's vector-Jacobian product with grad_out."""
        return (self.fn(inputs, weights, kept)[0] * grad_out).sum()


class Checkpointed(nn.Cell):
    """A block run through a shared `BlockCheckpoint`; its parameters keep the block's names."""

    def __init__(self, block, checkpoint):
        super().__init__(auto_prefix=False)
        self.block = block
        self.checkpoint = checkpoint

    def construct(self, *inputs):
        return self.checkpoint(inputs, self.block.weights())[0]


def recomputable_blocks(model):
    """(path, cell) of the cells of `model` that offer `forward(inputs, weights, kept)` and `weights()`, in order."""
    return [(path, cell) for path, cell in model.cells_and_names()
            if path and callable(getattr(cell, "forward", None)) and callable(getattr(cell, "weights", None))]


def apply_recompute(model, every, compiled):
    """Recompute the activations of every `every`-th block of `model` (changed in place) in the backward pass.

    `compiled`: whether the training step runs under ms.jit. Apply it last, after parallelize. On CPU under jit every
    block is checkpointed or none (`every` must be 1): a compiled graph with both kinds fails to build in MindSpore.
    """
    if every < 0:
        raise ValueError(f"recompute_every must be >= 0, got {every}")
    blocks = recomputable_blocks(model)
    if every == 0 or not blocks:
        return model
    if fused() or not compiled:
        for _, block in blocks[::every]:
            block.recompute()
        return model
    if every != 1:
        raise ValueError(f"model.recompute_every = {every}: compiled on CPU, recompute is every block (1) or none (0)")
    cells = dict(model.cells_and_names())
    checkpoints = {}  # one per variant: blocks of a variant compute the same function of their weights
    for path, block in blocks:
        variant = getattr(block, "variant", 0)
        if variant not in checkpoints:
            checkpoints[variant] = BlockCheckpoint(block.forward)
        checkpoint = checkpoints[variant]
        parent, _, name = path.rpartition(".")
        cells[parent].insert_child_to_cell(name, Checkpointed(block, checkpoint))
    return model
