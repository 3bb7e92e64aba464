"""Learning-rate policies: a linear warm-up, then either a level that halves when validation plateaus (the Movie Gen
recipe; the DiT's) or a cosine decay to a floor (the TAE's). `LRSchedulerSettings` (``train.lr_scheduler``) picks one
by ``policy``; warm-up and floor have the same names in both.

Every policy has ``lr_at(step)`` (``step`` = optimizer updates done before this one, so the first update is step 0),
``report_validation(loss)`` (True when the learning rate just dropped) and ``state_dict`` / ``load_state_dict``
(JSON-able progress for the checkpoint metadata; the settings are configuration, not state).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional


class _WarmUpLR:
    """Linear warm-up over ``warmup_steps`` (none when 0) to the level `_level(step)` of the subclass."""
    policy: str

    def __init__(self, base_lr: float, warmup_steps: int, min_lr: float):
        name = type(self).__name__
        if not base_lr > 0:
            raise ValueError(f"{name}: base_lr must be > 0, got {base_lr}")
        if warmup_steps < 0:
            raise ValueError(f"{name}: warmup_steps must be >= 0, got {warmup_steps}")
        if not 0 <= min_lr <= base_lr:
            raise ValueError(f"{name}: min_lr must be in [0, base_lr={base_lr}], got {min_lr}")
        self.base_lr, self.warmup_steps, self.min_lr = base_lr, warmup_steps, min_lr

    def _level(self, step: int) -> float:
        raise NotImplementedError

    def lr_at(self, step: int) -> float:
        """Learning rate of the optimizer update ``step`` (0-based)."""
        if step < 0:
            raise ValueError(f"{type(self).__name__}.lr_at: step must be >= 0, got {step}")
        if self.warmup_steps and step < self.warmup_steps:
            return self._level(step) * (step + 1) / self.warmup_steps
        return self._level(step)

    def report_validation(self, loss: float) -> bool:
        """Take one validation loss; return True when the learning rate was just reduced."""
        loss = float(loss)
        if not math.isfinite(loss):
            raise ValueError(f"{type(self).__name__}.report_validation: validation loss is {loss} (training has "
                             "diverged?)")
        return self._take_validation(loss)

    def _take_validation(self, loss: float) -> bool:
        return False

    def _check_policy(self, state: Mapping) -> None:
        saved = state.get("policy", "plateau")  # checkpoints from before the cosine policy hold plateau state
        if saved != self.policy:
            raise ValueError(f"the checkpoint's learning-rate policy is {saved!r}, this run's is {self.policy!r} "
                             "(train.lr_scheduler.policy)")


class PlateauLR(_WarmUpLR):
    """Linear warm-up to ``base_lr``, then a level that drops by ``factor`` when validation stops improving.

    - ``lr_at(step)`` = level * (step + 1) / warmup_steps during the warm-up, then level.
    - ``report_validation(loss)`` after each validation: the loss improves when it is below
      ``best * (1 - threshold)`` (relative threshold; with ``best`` the lowest loss seen so far). After more than
      ``patience`` validations in a row without improvement the level becomes ``max(level * factor, min_lr)``, the
      count restarts and ``best`` is kept. Returns True when the level actually dropped (never below ``min_lr``).
      Without validations the level stays ``base_lr``.
    """
    policy = "plateau"

    def __init__(self, base_lr: float, warmup_steps: int = 0, patience: int = 3, factor: float = 0.5,
                 min_lr: float = 0.0, threshold: float = 1e-4):
        super().__init__(base_lr, warmup_steps, min_lr)
        if patience < 0:
            raise ValueError(f"PlateauLR: patience must be >= 0, got {patience}")
        if not 0 < factor < 1:
            raise ValueError(f"PlateauLR: factor must be in (0, 1), got {factor}")
        if not 0 <= threshold < 1:
            raise ValueError(f"PlateauLR: threshold must be in [0, 1), got {threshold}")
        self.patience = patience
        self.factor = factor
        self.threshold = threshold
        self.level = base_lr
        self.best = math.inf
        self.bad_validations = 0
        self.reductions = 0

    def _level(self, step: int) -> float:
        return self.level

    def _take_validation(self, loss: float) -> bool:
        if loss < self.best * (1.0 - self.threshold):
            self.best = loss
            self.bad_validations = 0
            return False
        self.bad_validations += 1
        if self.bad_validations <= self.patience:
            return False
        self.bad_validations = 0
        new_level = max(self.level * self.factor, self.min_lr)
        if new_level < self.level:
            self.level = new_level
            self.reductions += 1
            return True
        return False

    def state_dict(self) -> dict:
        return {"policy": self.policy, "level": self.level, "best": None if math.isinf(self.best) else self.best,
                "bad_validations": self.bad_validations, "reductions": self.reductions}

    def load_state_dict(self, state: Mapping) -> None:
        self._check_policy(state)
        missing = {"level", "best", "bad_validations", "reductions"} - set(state)
        if missing:
            raise KeyError(f"PlateauLR state lacks {sorted(missing)}")
        self.level = float(state["level"])
        self.best = math.inf if state["best"] is None else float(state["best"])
        self.bad_validations = int(state["bad_validations"])
        self.reductions = int(state["reductions"])


class CosineLR(_WarmUpLR):
    """Linear warm-up to ``base_lr``, then a half cosine from ``base_lr`` down to ``min_lr`` at the last step
    (``total_steps - 1``); validation does not change it. Its learning rates follow from the step alone."""
    policy = "cosine"

    def __init__(self, base_lr: float, total_steps: int, warmup_steps: int = 0, min_lr: float = 0.0):
        super().__init__(base_lr, warmup_steps, min_lr)
        if total_steps < 1:
            raise ValueError(f"CosineLR: total_steps must be >= 1, got {total_steps}")
        self.total_steps = total_steps

    def _level(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.base_lr
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - 1 - self.warmup_steps))
        return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))

    def state_dict(self) -> dict:
        return {"policy": self.policy}

    def load_state_dict(self, state: Mapping) -> None:
        self._check_policy(state)


@dataclass
class LRSchedulerSettings:
    """policy: "plateau" (halve the level when validation plateaus for more than `patience` checks; without
    validation the level stays `lr`) or "cosine" (decay to `min_lr` at the last step). Both warm up linearly over
    `warmup_steps` and never go below `min_lr`; `patience`, `factor` and `threshold` are the plateau policy's. lr:
    the seed scripts' name for the learning rate: given, it replaces train.optimizer.lr."""
    policy: str = "plateau"
    warmup_steps: int = 1000
    min_lr: float = 1e-6
    patience: int = 3
    factor: float = 0.5
    threshold: float = 1e-4
    lr: Optional[float] = None

    def build(self, base_lr: float, total_steps: int) -> _WarmUpLR:
        if self.policy == "plateau":
            return PlateauLR(base_lr, self.warmup_steps, self.patience, self.factor, self.min_lr, self.threshold)
        if self.policy == "cosine":
            return CosineLR(base_lr, total_steps, self.warmup_steps, self.min_lr)
        raise ValueError(f"policy must be 'plateau' or 'cosine', got {self.policy!r}")
