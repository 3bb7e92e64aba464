"""The one place where the transformer chooses between fused device kernels and plain MindSpore math.

On Ascend, flash attention (`ops.flash_attention_score`) and the fused RMSNorm (`ops.rms_norm`) are used. Elsewhere
(CPU, where those kernels do not exist) the same arithmetic is written with `mint` matmul/softmax/rsqrt. Both paths
keep softmax and normalisation statistics in fp32 when activations are bf16.
"""
import mindspore as ms
from mindspore import mint, ops

FUSED_DEVICES = ("Ascend",)


def use_fused_kernels(device_target=None):
    """Whether the fused kernels should be used on `device_target` (default: the current MindSpore device)."""
    if device_target is None:
        device_target = ms.get_context("device_target")
    return device_target in FUSED_DEVICES


def rms_norm(x, weight, eps, fused):
    """RMSNorm over the last axis, statistics in fp32, result in the input dtype."""
    if fused:
        return ops.rms_norm(x, weight.astype(x.dtype), eps)[0]
    x32 = x.astype(ms.float32)
    normed = x32 * mint.rsqrt(mint.mean(x32 * x32, dim=-1, keepdim=True) + eps)
    return (normed * weight.astype(ms.float32)).astype(x.dtype)


def attention(q, k, v, key_mask, fused):
    """Multi-head attention on (B, heads, N, head_dim) tensors, bidirectional.

    `key_mask` is None or (B, L) with 1 for real keys and 0 for padding; padded keys get no weight. A query whose keys
    are all padding returns zeros (instead of an average over padding), so padded values never leak into the output.
    """
    head_dim = q.shape[-1]
    scale = head_dim ** -0.5
    if fused:
        drop = None if key_mask is None else (key_mask[:, None, None, :] == 0).astype(ms.uint8)
        out = ops.flash_attention_score(q, k, v, head_num=q.shape[1], attn_mask=drop, scalar_value=scale,
                                        input_layout="BNSD")
    else:
        scores = mint.matmul(q, mint.transpose(k, -1, -2)).astype(ms.float32) * scale
        if key_mask is not None:
            bias = (1.0 - key_mask.astype(ms.float32)) * -1e9
            scores = scores + bias[:, None, None, :]
        out = mint.matmul(mint.softmax(scores, dim=-1).astype(v.dtype), v)
    if key_mask is not None:
        any_valid = (key_mask.astype(ms.float32).sum(axis=-1) > 0).astype(out.dtype)
        out = out * any_valid[:, None, None, None]
    return out
