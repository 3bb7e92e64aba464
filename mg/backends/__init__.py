"""How the models' heavy operations run: the one place that chooses, at run time, between the device's fused kernels
and plain MindSpore math with hand-written backwards.

The models (mg/models) say what is computed, in the paper's terms, and call the functions and kernels here for the
operations whose speed or memory depends on the device: dense layers, attention, normalisation, adaLN modulation,
convolutions, activation checkpointing. Each function checks `fused()` when it runs (when a graph is compiled, under
ms.jit): on Ascend it uses MindSpore's fused operators (flash attention, rms_norm, linear, conv3d); elsewhere (CPU)
the same arithmetic written with matmuls and hand-written backwards, which autodiff on CPU would make slow or
memory-hungry (docs/performance.md). Every kernel is tested equal to the plain formula (tests/backends).
"""
from mg.backends.adaln import gated_add, modulate
from mg.backends.mha import attention, merge_heads, replay_attention, split_heads, token_axis
from mg.backends.conv import Conv3dKernel, ConvGeometry
from mg.backends.device import fused, fused_on, use_backend
from mg.backends.dense import FROM_FEATURE_MAJOR, ROWS, TO_FEATURE_MAJOR, linear
from mg.backends.norms import GroupNormKernel, RMSNormKernel
from mg.backends.recompute import apply_recompute
from mg.backends.tensors import expand, expand_summed_by_matmul, narrow, permute, split_equal

__all__ = ["Conv3dKernel", "ConvGeometry", "FROM_FEATURE_MAJOR", "GroupNormKernel", "RMSNormKernel", "ROWS",
           "TO_FEATURE_MAJOR", "apply_recompute", "attention", "expand", "fused", "fused_on", "gated_add", "linear",
           "merge_heads", "modulate", "permute", "replay_attention", "split_equal", "split_heads", "token_axis",
           "use_backend"]
