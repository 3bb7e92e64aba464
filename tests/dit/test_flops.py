"""The analytic FLOP count equals a count of the matmuls a real forward pass executes."""
import mindspore as ms
import numpy as np

import mg.models.dit.kernels as kernels
from mg.models.dit.flops import forward_flops, training_flops

from dit.helpers import random_model, text_inputs


def test_formula_matches_the_executed_matmul_shapes(monkeypatch):
    counted = []
    real_mm_nt, real_bmm, real_bmm_nt = kernels._MM_NT, kernels._BMM, kernels._BMM_NT

    def mm_nt(a, b):  # projections: rows (M, I) @ weight (O, I)^T
        counted.append(2 * int(np.prod(a.shape)) * b.shape[0])
        return real_mm_nt(a, b)

    def bmm(a, b):  # a @ b
        counted.append(2 * int(np.prod(a.shape)) * b.shape[-1])
        return real_bmm(a, b)

    def bmm_nt(a, b):  # a @ b^T
        counted.append(2 * int(np.prod(a.shape)) * b.shape[-2])
        return real_bmm_nt(a, b)

    monkeypatch.setattr(kernels, "_MM_NT", mm_nt)
    monkeypatch.setattr(kernels, "_BMM", bmm)
    monkeypatch.setattr(kernels, "_BMM_NT", bmm_nt)

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
