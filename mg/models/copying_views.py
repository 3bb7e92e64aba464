"""Transposes and equal splits as kernels that write their output, in place of mint's view ops.

`mint.transpose`, `mint.permute`, `Tensor.permute` and `mint.chunk` return strided views. Under ms.jit on CPU every
view is then made contiguous by a generic element-by-element copy, which took a third of the toy model's compiled
train step (perf) and is 3x slower than the Transpose kernel: 20 (1, 1024, 12, 32) transposes took 63 ms through
`mint.transpose`, 22 ms through `ops.transpose`; 20 three-way splits of (1, 1024, 384) 15 ms through `mint.chunk`,
7.4 ms through `ops.split` (docs/performance.md). The models use these two functions instead. (The DiT's attention
heads need neither: mg/models/dit/kernels.py projects straight into the layout its attention takes.)
"""
from mindspore import ops


def permute(x, axes):
    """x with its axes reordered (numpy.transpose's `axes`)."""
    return ops.transpose(x, tuple(axes))


def split_equal(x, parts, axis=-1):
    """`parts` equal pieces of x along `axis`."""
    return ops.split(x, x.shape[axis] // parts, axis=axis)
