"""The one choice of mg.backends: fused kernels on Ascend only, plain elsewhere, decided when an operation runs (or
its graph compiles), and forced by `use_backend`. The fused operators that have no CPU kernel (flash attention,
rms_norm, group_norm) are checked by what they are called with."""
import mindspore as ms
import numpy as np
import pytest

import mg.backends.mha as mha
import mg.backends.norms as norms_module
from mg.backends import GroupNormKernel, RMSNormKernel, attention, fused, fused_on, token_axis, use_backend


@pytest.mark.parametrize("device, expected", [("Ascend", True), ("CPU", False), ("GPU", False)])
def test_fused_kernels_are_chosen_only_on_ascend(device, expected):
    assert fused_on(device) is expected


def test_the_choice_is_made_at_run_time_and_can_be_forced():
    assert fused() is False and token_axis() == 3  # this CPU context: the plain path, heads (B, H, Dh, N)
    with use_backend("fused"):
        assert fused() is True and token_axis() == 1
        with use_backend("plain"):
            assert fused() is False
        assert fused() is True
    assert fused() is False
    with pytest.raises(ValueError, match="'fused' or 'plain'"):
        with use_backend("ascend"):
            pass


def test_a_graph_keeps_the_choice_it_was_compiled_with():
    def fn(x):
        return x * 2 if fused() else x * 3
    compiled = ms.jit(fn)
    x = ms.Tensor(np.ones(2, np.float32))
    with use_backend("fused"):
        assert compiled(x).asnumpy()[0] == 2
    assert ms.jit(fn)(ms.Tensor(np.ones(3, np.float32))).asnumpy()[0] == 3  # a new shape compiles anew


def test_fused_attention_calls_flash_attention_with_rows_heads_scale_and_mask(monkeypatch):
    calls = {}

    def flash(q, k, v, head_num, attn_mask, scalar_value, input_layout):
        calls.update(head_num=head_num, mask=None if attn_mask is None else attn_mask.asnumpy(),
                     scale=scalar_value, layout=input_layout, shapes=(q.shape, k.shape))
        return q
    monkeypatch.setattr(mha.ops, "flash_attention_score", flash)
    q = ms.Tensor(np.ones((2, 5, 12), np.float32))  # (B, N, H * Dh) rows, 3 heads of 4
    kv = ms.Tensor(np.ones((2, 7, 12), np.float32))
    mask = ms.Tensor(np.array([[1] * 7, [0] * 7], np.float32))
    with use_backend("fused"):
        out = attention(q, kv, kv, mask, 4).asnumpy()
    assert calls["head_num"] == 3 and calls["scale"] == pytest.approx(0.5) and calls["layout"] == "BSH"
    assert calls["mask"].shape == (2, 1, 5, 7) and calls["mask"][0].max() == 0 and calls["mask"][1].min() == 1
    assert np.abs(out[1]).max() == 0 and np.abs(out[0]).min() == 1  # a sample of only padding gets zeros


def test_fused_norms_call_the_fused_operators(monkeypatch):
    seen = []
    monkeypatch.setattr(norms_module.ops, "rms_norm", lambda x, w, eps: (seen.append(("rms", eps)) or x * w, None))
    monkeypatch.setattr(norms_module.mint.nn.functional, "group_norm",
                        lambda x, groups, w, b, eps: seen.append(("group", groups, tuple(x.shape))) or x)
    x = ms.Tensor(np.ones((2, 6, 8), np.float32))
    with use_backend("fused"):
        RMSNormKernel(1e-5)(x, ms.Tensor(np.full(8, 2.0, np.float32)))
        out = GroupNormKernel(4, 1e-6)(x, ms.Tensor(np.ones(8, np.float32)), ms.Tensor(np.zeros(8, np.float32)))
    assert seen == [("rms", 1e-5), ("group", 4, (2, 8, 6, 1))]  # channels first, the rows as one spatial axis
    assert out.shape == x.shape
