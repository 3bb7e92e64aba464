"""Learning-rate policy: linear warm-up, then halve whenever the validation loss plateaus (Movie Gen recipe)."""
from __future__ import annotations

import math
from typing import Mapping


class PlateauLR:
    """Linear warm-up to ``base_lr``, then a level that drops by ``factor`` when validation stops improving.

    - ``lr_at(step)`` = level * min(1, (step + 1) / warmup_steps) (step counts from 0; no warm-up when 0).
    - ``report_validation(loss)`` after each validation: the loss improves when it is below
      ``best * (1 - threshold)`` (relative threshold; with ``best`` the lowest loss seen so far). After more than
      ``patience`` validations in a row without improvement the level becomes ``max(level * factor, min_lr)``, the
      count restarts and ``best`` is kept. Returns True when the level actually dropped (never below ``min_lr``).
    """

    def __init__(self, base_lr: float, warmup_steps: int = 0, patience: int = 3, factor: float = 0.5,
                 min_lr: float = 0.0, threshold: float = 1e-4):
        if not base_lr > 0:
            raise ValueError(f"PlateauLR: base_lr must be > 0, got {base_lr}")
        if warmup_steps < 0 or patience < 0:
            raise ValueError(f"PlateauLR: warmup_steps and patience must be >= 0, got {warmup_steps}, {patience}")
        if not 0 < factor < 1:
            raise ValueError(f"PlateauLR: factor must be in (0, 1), got {factor}")
        if not 0 <= min_lr <= base_lr:
            raise ValueError(f"PlateauLR: min_lr must be in [0, base_lr={base_lr}], got {min_lr}")
        if not 0 <= threshold < 1:
            raise ValueError(f"PlateauLR: threshold must be in [0, 1), got {threshold}")
        self.base_lr = base_lr
        self.warmup_steps = warmup_steps
        self.patience = patience
        self.factor = factor
        self.min_lr = min_lr
        self.threshold = threshold
        self.level = base_lr
        self.best = math.inf
        self.bad_validations = 0
        self.reductions = 0

    def lr_at(self, step: int) -> float:
        """Learning rate to use for optimizer step ``step`` (0-based)."""
        if step < 0:
            raise ValueError(f"PlateauLR.lr_at: step must be >= 0, got {step}")
        if self.warmup_steps and step < self.warmup_steps:
            return self.level * (step + 1) / self.warmup_steps
        return self.level

    def report_validation(self, loss: float) -> bool:
        """Take one validation loss; return True when the learning rate was just reduced."""
        loss = float(loss)
        if not math.isfinite(loss):
            raise ValueError(f"PlateauLR.report_validation: validation loss is {loss} (training has diverged?)")
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
        """JSON-able progress (the constructor settings are configuration, not state)."""
        return {"level": self.level, "best": None if math.isinf(self.best) else self.best,
                "bad_validations": self.bad_validations, "reductions": self.reductions}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore what `state_dict` returned."""
        missing = {"level", "best", "bad_validations", "reductions"} - set(state)
        if missing:
            raise KeyError(f"PlateauLR state lacks {sorted(missing)}")
        self.level = float(state["level"])
        self.best = math.inf if state["best"] is None else float(state["best"])
        self.bad_validations = int(state["bad_validations"])
        self.reductions = int(state["reductions"])
