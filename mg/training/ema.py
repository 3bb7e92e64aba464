"""Exponential moving average (EMA) of model weights: float32 shadows on the device, beside what they track."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Mapping, Optional, Sequence

import mindspore as ms
import numpy as np
from mindspore import Parameter, ParameterTuple, nn, ops

from mg.io import check_names, copy_into, tensor_to_numpy


class EMA:
    """Float32 shadows of `targets` updated as ``shadow = d * shadow + (1 - d) * target`` every `every` steps.

    `targets` are the tensors this rank owns: a model's parameters in one process, the ZeRO slices of the weights
    under ZeRO >= 1 (so the EMA is sharded like them). `names` are the single-process parameter names the shadows
    are saved under (default: the targets' names). ``d`` is ``decay ** every`` (the same horizon in steps whatever
    `every`); with ``warmup=True`` it is at most ``(1 + n) / (10 + n)`` after n updates, so early shadows follow
    the weights instead of remembering the random init. `publish` is called after the targets are overwritten
    (e.g. the ZeRO all-gather of slices into the full weights).

    `update(step)` is called after every optimizer step and updates when ``step % every == 0``. Checkpointing:
    `state_dict` maps the names to the shadows; ``num_updates`` goes into the checkpoint metadata.
    """

    def __init__(self, targets: Iterable[Parameter], decay: float = 0.9999, warmup: bool = False, every: int = 1,
                 names: Optional[Sequence[str]] = None, publish: Optional[Callable[[], object]] = None):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        if every < 1:
            raise ValueError(f"EMA every must be >= 1, got {every}")
        self.targets = list(targets)
        self.names = list(names) if names is not None else [t.name for t in self.targets]
        duplicates = sorted({n for n in self.names if self.names.count(n) > 1})
        if duplicates:
            raise ValueError(f"EMA parameters must have unique names; repeated: {duplicates}")
        self.decay, self.warmup, self.every, self.publish = decay, warmup, every, publish
        self.num_updates = 0
        self.shadows = [Parameter(ms.Tensor(tensor_to_numpy(t).astype(np.float32)), name=f"ema.{name}",
                                  requires_grad=False) for t, name in zip(self.targets, self.names)]
        self._move = _MoveTowards(self.shadows, self.targets)

    def current_decay(self) -> float:
        """The decay the next update uses."""
        decay = self.decay ** self.every
        if self.warmup:
            return min(decay, (1 + self.num_updates) / (10 + self.num_updates))
        return decay

    def update(self, step: int) -> bool:
        """After optimizer step `step` (1-based): move every shadow towards its target if `step` is a multiple of
        `every`. Returns whether it updated."""
        if step % self.every:
            return False
        self._move(ms.Tensor(self.current_decay(), ms.float32))
        self.num_updates += 1
        return True

    def state_dict(self) -> dict[str, np.ndarray]:
        """``{parameter name: float32 shadow array}``."""
        return {name: tensor_to_numpy(shadow) for name, shadow in zip(self.names, self.shadows)}

    def load_state_dict(self, tensors: Mapping[str, np.ndarray], num_updates: int = 0) -> None:
        """Restore shadows saved by `state_dict`; names and shapes must match exactly."""
        check_names(dict(zip(self.names, self.shadows)), tensors, "EMA state does not fit the tracked parameters")
        for name, shadow in zip(self.names, self.shadows):
            copy_into(shadow, tensors[name])
        self.num_updates = int(num_updates)

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """Temporarily copy the EMA weights into the targets (and publish them); restore on exit. For validation."""
        backups = [tensor_to_numpy(t) for t in self.targets]  # host copies: Tensor.copy() lacks bf16 on CPU
        try:
            for target, shadow in zip(self.targets, self.shadows):
                copy_into(target, tensor_to_numpy(shadow))
            self._publish()
            yield
        finally:
            for target, backup in zip(self.targets, backups):
                copy_into(target, backup)
            self._publish()

    def _publish(self):
        if self.publish is not None:
            self.publish()


class _MoveTowards(nn.Cell):
    """shadow = d * shadow + (1 - d) * target for every pair, as one compiled graph (one op call per tensor in
    PyNative cost ~15x more)."""

    def __init__(self, shadows, targets):
        super().__init__(auto_prefix=False)
        self.shadows, self.targets = ParameterTuple(shadows), ParameterTuple(targets)

    @ms.jit
    def construct(self, d):
        done = ()
        for shadow, target in zip(self.shadows, self.targets):
            done = done + (ops.assign(shadow, shadow * d + (1 - d) * target.astype(ms.float32)),)
        return done
