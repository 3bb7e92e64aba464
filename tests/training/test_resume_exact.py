"""Train, checkpoint everything, 'crash', resume: the result equals an uninterrupted run bit for bit."""
import mindspore as ms
import numpy as np
from mindspore import nn, ops

from mg.io import load_checkpoint, load_state_dict, state_dict
from mg.training.checkpoint import CheckpointManager, merge_namespaces, rng_state, set_rng_state, split_namespaces
from mg.training.ema import EMA
from mg.training.lr_policy import PlateauLR
from mg.optim import build_adamw, load_optimizer_state, optimizer_state, set_lr

TOTAL, SAVE_AT, VALIDATE_EVERY = 8, 4, 2


class Net(nn.Cell):
    def __init__(self):
        super().__init__()
        self.proj = nn.Dense(3, 4)
        self.norm = nn.LayerNorm((4,))

    def construct(self, x):
        return self.norm(self.proj(x))


class Run:
    """The pieces a trainer owns; the data come from a NumPy Generator so they resume with the RNG state."""

    def __init__(self):
        ms.set_seed(0)
        self.net = Net()
        self.opt = build_adamw(self.net.trainable_params(), lr=0.01, weight_decay=0.1)
        self.ema = EMA(self.net.trainable_params(), decay=0.8, warmup=True)
        self.policy = PlateauLR(0.01, warmup_steps=3, patience=0)
        self.data_rng = np.random.default_rng(42)
        self.grad_fn = ms.value_and_grad(self._loss, None, self.opt.parameters)

    def _loss(self, x, y):
        return ops.mse_loss(self.net(x), y)

    def step(self, step):
        x = ms.Tensor(self.data_rng.standard_normal((2, 3)), ms.float32)
        y = ms.Tensor(self.data_rng.standard_normal((2, 4)), ms.float32)
        set_lr(self.opt, self.policy.lr_at(step))
        loss, grads = self.grad_fn(x, y)
        self.opt(grads)
        self.ema.update(step + 1)
        if (step + 1) % VALIDATE_EVERY == 0:
            with self.ema.swapped_in():
                self.policy.report_validation(float(loss.asnumpy()) + step)  # a rising "validation" loss halves lr

    def save(self, manager, step):
        tensors = merge_namespaces({"model": state_dict(self.net), "ema": self.ema.state_dict(),
                                    "optim": optimizer_state(self.opt)})
        meta = {"lr_policy": self.policy.state_dict(), "ema_num_updates": self.ema.num_updates,
                "rng": rng_state({"data": self.data_rng})}
        manager.save(step, tensors, meta)

    def load(self, path):
        tensors, meta = load_checkpoint(path)
        parts = split_namespaces(tensors)
        load_state_dict(self.net, parts["model"])
        self.ema.load_state_dict(parts["ema"], meta["ema_num_updates"])
        load_optimizer_state(self.opt, parts["optim"])
        self.policy.load_state_dict(meta["lr_policy"])
        set_rng_state(meta["rng"], {"data": self.data_rng})
        return meta["step"]


def test_resume_continues_exactly(tmp_path):
    straight = Run()
    for step in range(TOTAL):
        straight.step(step)
    assert straight.policy.reductions >= 1

    manager = CheckpointManager(tmp_path / "ckpt", keep_last=2)
    first = Run()
    for step in range(TOTAL):
        first.step(step)
        if step + 1 == SAVE_AT:
            first.save(manager, step + 1)
    # the first run "crashes" here; a fresh process resumes from the latest checkpoint
    resumed = Run()
    start = resumed.load(manager.resolve("latest"))
    assert start == SAVE_AT
    for step in range(start, TOTAL):
        resumed.step(step)

    for name, array in state_dict(straight.net).items():
        np.testing.assert_array_equal(state_dict(resumed.net)[name], array, err_msg=name)
    for name, array in straight.ema.state_dict().items():
        np.testing.assert_array_equal(resumed.ema.state_dict()[name], array, err_msg=name)
    assert resumed.policy.state_dict() == straight.policy.state_dict()
