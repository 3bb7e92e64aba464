"""The training loop: steps, gradient accumulation, EMA, validation driving the learning-rate policy, logging,
checkpoints that resume exactly, and a checkpoint on SIGTERM.

Everything random in a step (t, noise, posterior samples of pixel batches) is drawn from a NumPy Generator seeded by
(seed, step, data-parallel rank): equal on the ranks that share a sample, different across data-parallel ranks, and
needing no saved state. With the data loader's position in every checkpoint, a resumed run continues with exactly
the batches, times and noise an uninterrupted run would have used.
"""
import logging
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Tuple

import mindspore as ms
import numpy as np
from tqdm.auto import tqdm

from mg.io import load_checkpoint
from mg.models.dit.io import config_to_dict
from mg.training.checkpoint import CheckpointManager, merge_namespaces, rng_state, set_rng_state, split_namespaces
from mg.optim import set_lr
from mg.training.state_io import LocalState
from mg.training.train_log import TrainingLog

_logger = logging.getLogger(__name__)


@dataclass
class OptimizerSettings:
    """AdamW (decoupled weight decay, none on norms, embeddings and biases)."""
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: Tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8


@dataclass
class LRSchedulerSettings:
    """Linear warm-up, then the learning rate halves (`factor`) when validation plateaus for `patience` checks."""
    warmup_steps: int = 1000
    patience: int = 3
    factor: float = 0.5
    min_lr: float = 1e-6
    threshold: float = 1e-4


@dataclass
class StepSettings:
    gradient_accumulation_steps: int = 1
    clip_grad_norm: float = 1.0
    zero_stage: int = 0


@dataclass
class EMASettings:
    decay: float = 0.9999
    warmup: bool = False


@dataclass
class SaveSettings:
    every: int = 1000
    keep_last: int = 3


@dataclass
class LogSettings:
    every: int = 10
    plot_every: int = 100


@dataclass
class TrainSettings:
    """steps: optimizer steps in total (a resumed run continues up to it). resume: "latest", a checkpoint directory
    or file. ema: null (or "") disables the EMA."""
    output_path: str = "output"
    steps: int = 1000
    resume: Optional[str] = None
    settings: StepSettings = field(default_factory=StepSettings)
    optimizer: OptimizerSettings = field(default_factory=OptimizerSettings)
    lr_scheduler: LRSchedulerSettings = field(default_factory=LRSchedulerSettings)
    ema: Optional[EMASettings] = field(default_factory=EMASettings)
    save: SaveSettings = field(default_factory=SaveSettings)
    log: LogSettings = field(default_factory=LogSettings)


@dataclass
class ValidSettings:
    """Held-out CSV (null disables validation); it is read with the training dataset's other settings."""
    csv_path: Optional[str] = None
    every: int = 500
    num_t: int = 8
    max_batches: int = 16
    seed: int = 0


class Trainer:
    """`state` (default: LocalState) moves weights, optimizer state and EMA in and out of checkpoints; under a
    parallel layout every rank runs the loop and the gathers, and only the writing rank logs and saves."""

    def __init__(self, *, model, train_step, optimizer, lr_policy, ema, loader, inputs, flow, settings, seed,
                 dp_rank=0, validation_batches=None, valid=None, run_config=None, state=None):
        self.state = state or LocalState(model, optimizer, ema)
        self.model, self.train_step, self.optimizer = model, train_step, optimizer
        self.lr_policy, self.ema, self.loader, self.inputs, self.flow = lr_policy, ema, loader, inputs, flow
        self.settings, self.seed, self.dp_rank = settings, seed, dp_rank
        self.validation_batches, self.valid = validation_batches, valid
        self.run_config = run_config or {}
        self.output = Path(settings.output_path)
        self.checkpoints = CheckpointManager(self.output / "ckpt", keep_last=settings.save.keep_last)
        self.step = 0
        self.stop_requested = False

    # ---- checkpoints ---------------------------------------------------------------------------------------------
    def checkpoint_contents(self):
        spaces = {"model": self.state.model_state(), "optimizer": self.state.optimizer_state()}
        if self.ema is not None:
            spaces["ema"] = self.state.ema_state()
        metadata = {"dit_config": config_to_dict(self.model.config), "loader": self.loader.state_dict(),
                    "lr_policy": self.lr_policy.state_dict(), "rng": rng_state(),
                    "ema_updates": self.ema.num_updates if self.ema is not None else 0, "config": self.run_config}
        return merge_namespaces(spaces), metadata

    def save(self):
        tensors, metadata = self.checkpoint_contents()  # collective under a parallel layout
        if not self.state.writes:
            return None
        path = self.checkpoints.save(self.step, tensors, metadata)
        _logger.info("saved checkpoint %s", path)
        return path

    def resume(self, where):
        path = self.checkpoints.resolve(where)
        tensors, metadata = load_checkpoint(path)
        spaces = split_namespaces(tensors)
        self.state.load_model(spaces["model"])
        self.state.load_optimizer(spaces["optimizer"])
        if self.ema is not None:
            if "ema" not in spaces:
                raise ValueError(f"{path} has no EMA weights but this run keeps an EMA (set train.ema null)")
            self.state.load_ema(spaces["ema"], metadata["ema_updates"])
        self.loader.load_state_dict(metadata["loader"])
        self.lr_policy.load_state_dict(metadata["lr_policy"])
        set_rng_state(metadata["rng"])
        self.step = int(metadata["step"])
        _logger.info("resumed from %s at step %d", path, self.step)

    # ---- one step ------------------------------------------------------------------------------------------------
    def batches(self):
        while True:
            yield from self.loader

    def micro_step(self, batch, rng):
        x1, embs, masks = self.inputs(batch, rng)
        x0 = ms.Tensor(self.flow.sample_noise(x1.shape, rng))
        t = ms.Tensor(self.flow.sample_t(x1.shape[0], rng))
        return float(self.train_step(x1, x0, t, embs, masks).asnumpy())

    def validate(self):
        def evaluate():
            return self.flow.validation_loss(self.model, self.validation_batches, self.valid.num_t, self.valid.seed)
        if self.ema is None:
            return evaluate()
        with self.ema.swapped_in():
            return evaluate()

    # ---- the loop ------------------------------------------------------------------------------------------------
    def request_stop(self, signum, _frame):
        _logger.warning("signal %d: saving a checkpoint after this step, then exiting", signum)
        self.stop_requested = True

    def run(self):
        """Train up to `settings.steps`; returns the final step (earlier if stopped by SIGTERM)."""
        if self.settings.resume:
            self.resume(self.settings.resume)
        elif self.checkpoints.latest() is not None:
            raise FileExistsError(f"{self.checkpoints.directory} already holds checkpoints; pass --train.resume latest "
                                  "to continue that run, or choose another --train.output_path")
        previous_handler = signal.signal(signal.SIGTERM, self.request_stop)
        log = TrainingLog(self.output, plot_every=self.settings.log.plot_every) if self.state.writes else None
        accumulation = self.settings.settings.gradient_accumulation_steps
        data = self.batches()
        progress = tqdm(total=self.settings.steps, initial=self.step, desc="train", dynamic_ncols=True,
                        disable=not self.state.writes)
        try:
            while self.step < self.settings.steps and not self.stop_requested:
                lr = self.lr_policy.lr_at(self.step)
                set_lr(self.optimizer, lr)
                start = time.perf_counter()
                rng = np.random.default_rng([self.seed, self.step, self.dp_rank])
                loss = float(np.mean([self.micro_step(next(data), rng) for _ in range(accumulation)]))
                if not math.isfinite(loss):
                    raise FloatingPointError(f"loss is {loss} at step {self.step + 1}: stopping (last checkpoint kept)")
                if self.ema is not None:
                    self.ema.update()
                self.step += 1
                seconds = time.perf_counter() - start
                progress.update(1)
                progress.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", s_per_step=f"{seconds:.2f}")
                record = {}
                if self.step % self.settings.log.every == 0 or self.step == self.settings.steps:
                    record.update(loss=loss, lr=lr, step_seconds=seconds)
                if self.validation_batches and self.step % self.valid.every == 0:
                    record["val_loss"] = self.validate()
                    if self.lr_policy.report_validation(record["val_loss"]):
                        _logger.info("validation plateaued: learning rate halved to %.3g", self.lr_policy.level)
                if record and log is not None:
                    log.log(self.step, **record)
                if (self.step % self.settings.save.every == 0 or self.step == self.settings.steps
                        or self.stop_requested):
                    self.save()
        finally:
            progress.close()
            signal.signal(signal.SIGTERM, previous_handler)
        if log is not None:
            log.plot()
        return self.step
