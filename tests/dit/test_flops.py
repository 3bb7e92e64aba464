"""The analytic FLOP count equals a count of the matmuls a real forward pass executes."""
import mindspore as ms
import numpy as np

import mg.backends.dense as dense
import mg.backends.mha as mha
from mg.models.dit.flops import forward_flops, training_flops

from dit.helpers import random_model, text_inputs


def test_formula_matches_the_executed_matmul_shapes(monkeypatch):
    counted = []

    def counting(op):
        def run(a, b):  # 2 x (output elements) x (contracted length)
            out = op(a, b)
            contracted = a.shape[-2] if op.transpose_a else a.shape[-1]
            counted.append(2 * int(np.prod(out.shape)) * contracted)
            return out
        return run

    for module in (dense, mha):  # the matmul primitives, where each module holds them
        for name in ("MM", "MM_NT", "MM_TN", "BMM", "BMM_NT", "BMM_TN", "BMM_TT"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, counting(getattr(module, name)))

    model = random_model()
    rng = np.random.default_rng(0)
    batch, shape = 2, (2, 4, 3, 6, 8)                      # 3 x 3 x 4 = 36 patches per sample
    embs, masks = text_inputs(batch, [[5, 2], [1, 6]], rng)  # padded lengths 5 and 6
    model(ms.Tensor(rng.standard_normal(shape).astype(np.float32)), ms.Tensor(np.array([0.1, 0.9], np.float32)),
          embs, masks)
    expected = forward_flops(model.config, batch, 36, {"ul2": 5, "byt5": 6})
    assert len(counted) > 20  # the hooks saw the projections and attention matmuls
    assert sum(counted) == expected
    assert training_flops(model.config, batch, 36, {"ul2": 5, "byt5": 6}) == 3 * expected
