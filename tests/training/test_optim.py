"""AdamW against a NumPy AdamW (PyNative and ms.jit), per-step learning rate, no-decay grouping, state round trip."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import nn, ops

from mg.io import CheckpointError
from mg.optim import (AdamW, build_adamw, get_lr, is_no_decay, load_optimizer_state, optimizer_state,
                               set_lr)

WD, BETAS, EPS = 0.1, (0.9, 0.99), 1e-8


class Net(nn.Cell):
    def __init__(self):
        super().__init__()
        self.proj = nn.Dense(3, 4)
        self.norm = nn.LayerNorm((4,))
        self.pos_embed = ms.Parameter(ms.Tensor(np.random.default_rng(1).standard_normal((2, 4)), ms.float32))

    def construct(self, x):
        return self.norm(self.proj(x) + self.pos_embed)


def _numpy_adamw(params, grads_per_step, lrs, decay_names):
    """Reference AdamW, float64: decoupled decay, then Adam in the paper's efficient form (eps before correction)."""
    p = {n: v.astype(np.float64) for n, v in params.items()}
    m = {n: np.zeros_like(v) for n, v in p.items()}
    v2 = {n: np.zeros_like(v) for n, v in p.items()}
    for t, (grads, lr) in enumerate(zip(grads_per_step, lrs), start=1):
        for n in p:
            g = grads[n].astype(np.float64)
            m[n] = BETAS[0] * m[n] + (1 - BETAS[0]) * g
            v2[n] = BETAS[1] * v2[n] + (1 - BETAS[1]) * g * g
            step_size = lr * np.sqrt(1 - BETAS[1] ** t) / (1 - BETAS[0] ** t)
            wd = WD if n in decay_names else 0.0
            p[n] = p[n] * (1 - lr * wd)
            p[n] = p[n] - step_size * m[n] / (np.sqrt(v2[n]) + EPS)
    return p


@pytest.mark.parametrize("jit", [False, True], ids=["pynative", "jit"])
def test_two_steps_match_numpy_adamw_with_lr_changed_between_steps(jit):
    net = Net()
    params = net.trainable_params()
    opt = build_adamw(params, lr=0.05, weight_decay=WD, betas=BETAS, eps=EPS)
    rng = np.random.default_rng(0)
    x, y = (ms.Tensor(rng.standard_normal((2, 3)), ms.float32), ms.Tensor(rng.standard_normal((2, 4)), ms.float32))

    def loss_fn(a, b):
        return ops.mse_loss(net(a), b)

    grad_fn = ms.value_and_grad(loss_fn, None, opt.parameters)

    def step(a, b):
        loss, grads = grad_fn(a, b)
        opt(grads)
        return loss, grads

    step = ms.jit(step) if jit else step
    start = {p.name: p.asnumpy().copy() for p in params}
    grads_per_step, lrs = [], [0.05, 0.02]
    for lr in lrs:
        set_lr(opt, lr)
        _, grads = step(x, y)
        grads_per_step.append({p.name: g.asnumpy() for p, g in zip(opt.parameters, grads)})
    assert get_lr(opt) == pytest.approx(0.02)
    assert int(opt.global_step.asnumpy()[0]) == 2

    expected = _numpy_adamw(start, grads_per_step, lrs, decay_names={"proj.weight"})
    for p in params:
        assert not np.allclose(p.asnumpy(), start[p.name])  # every parameter really moved
        np.testing.assert_allclose(p.asnumpy(), expected[p.name], rtol=1e-5, atol=1e-6, err_msg=p.name)


def test_no_decay_grouping():
    def param(name, shape):
        return ms.Parameter(ms.Tensor(np.zeros(shape, np.float32)), name=name)

    decayed = ["blocks.0.attn.qkv.weight", "blocks.0.ffn.w1.weight", "final.linear.weight", "kernel"]
    not_decayed = ["blocks.0.norm1.weight", "blocks.0.attn.q_norm.weight", "ln_f.weight", "ln2.w", "norm.gamma",
                   "norm.beta", "x_embedder.proj.weight", "token_embedding.weight", "pos_embed_t", "spatial_pos",
                   "pe_table", "adaln.table", "head.bias"]
    for name in decayed:
        assert not is_no_decay(param(name, (4, 4))), name
    for name in not_decayed:
        assert is_no_decay(param(name, (4, 4))), name
    assert is_no_decay(param("blocks.0.attn.qkv.scale", (4,)))  # 1-D: always excluded

    opt = build_adamw([param("a.weight", (2, 2)), param("a.bias", (2, 2)), param("b.norm.weight", (2,))],
                      lr=1e-3, weight_decay=0.05)
    decay_of = {p.name: float(w.asnumpy()) for p, w in zip(opt.parameters, opt.weight_decay)}
    assert decay_of == {"a.weight": pytest.approx(0.05), "a.bias": 0.0, "b.norm.weight": 0.0}
    with pytest.raises(ValueError, match="no trainable"):
        build_adamw([], lr=1e-3, weight_decay=0.0)


def test_state_round_trip_continues_exactly():
    rng = np.random.default_rng(3)
    x, y = ms.Tensor(rng.standard_normal((2, 3)), ms.float32), ms.Tensor(rng.standard_normal((2, 4)), ms.float32)

    def make():
        ms.set_seed(0)
        net = Net()
        opt = build_adamw(net.trainable_params(), lr=0.01, weight_decay=WD)
        grad_fn = ms.value_and_grad(lambda a, b: ops.mse_loss(net(a), b), None, opt.parameters)
        return net, opt, lambda: opt(grad_fn(x, y)[1])

    net, opt, step = make()
    step()
    weights = {p.name: p.asnumpy().copy() for p in net.trainable_params()}
    state = optimizer_state(opt)
    assert state["global_step"].tolist() == [1] and any(k.startswith("adam_v.") for k in state)
    step()
    expected = {p.name: p.asnumpy().copy() for p in net.trainable_params()}

    net2, opt2, step2 = make()
    for p in net2.trainable_params():
        p.set_data(ms.Tensor(weights[p.name]))
    load_optimizer_state(opt2, state)
    step2()
    for p in net2.trainable_params():
        np.testing.assert_array_equal(p.asnumpy(), expected[p.name])

    broken = dict(state)
    broken.pop("global_step")
    broken["adam_m.proj.weight"] = np.zeros((1, 1), np.float32)
    with pytest.raises(CheckpointError, match=r"1 missing \[global_step\].*adam_m.proj.weight: \(1, 1\) vs expected"):
        load_optimizer_state(opt2, broken)


def test_three_steps_match_torch_adamw():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    values = {"w.weight": rng.standard_normal((3, 4)), "w.bias": rng.standard_normal(4)}
    grads = [{n: rng.standard_normal(v.shape) for n, v in values.items()} for _ in range(3)]
    ours = [ms.Parameter(ms.Tensor(v, ms.float32), name=n) for n, v in values.items()]
    opt = build_adamw(ours, lr=0.1, weight_decay=WD, betas=BETAS, eps=EPS)
    theirs = {n: torch.tensor(v, dtype=torch.float64, requires_grad=True) for n, v in values.items()}
    ref = torch.optim.AdamW([{"params": [theirs["w.weight"]], "weight_decay": WD},
                             {"params": [theirs["w.bias"]], "weight_decay": 0.0}], lr=0.1, betas=BETAS, eps=EPS)
    for g in grads:
        opt(tuple(ms.Tensor(g[p.name], ms.float32) for p in opt.parameters))
        for n, t in theirs.items():
            t.grad = torch.tensor(g[n])
        ref.step()
    for p in ours:
        np.testing.assert_allclose(p.asnumpy(), theirs[p.name].detach().numpy(), rtol=1e-5, atol=1e-6)


def test_plain_parameter_list_decays_everything():
    rng = np.random.default_rng(6)
    start, grad = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    param = ms.Parameter(ms.Tensor(start, ms.float32), name="v")
    opt = AdamW([param], learning_rate=0.1, betas=BETAS, eps=EPS, weight_decay=WD)
    opt((ms.Tensor(grad, ms.float32),))
    expected = _numpy_adamw({"v": start}, [{"v": grad}], [0.1], decay_names={"v"})["v"]
    np.testing.assert_allclose(param.asnumpy(), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="betas"):
        AdamW([param], betas=(1.0, 0.9))
