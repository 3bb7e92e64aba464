"""The training loop of both the DiT (train.py) and the TAE (tools/train_tae.py), driven by a step object
(mg.training.train_step.TrainStep): the loop owns the step counter, the learning-rate policy, the micro-batches of
gradient accumulation, the EMA, validation timing, logging (TrainingLog), checkpoints, exact resume, SIGTERM and the
progress bar; the step object owns how a batch becomes losses and updates, its extra checkpointed modules and its
validation.

Steps count optimizer updates: step N in the log, the progress bar and checkpoint step_N come after N updates.

Everything random in a step that the step object draws comes from a NumPy Generator seeded by (seed, step,
data-parallel rank): equal on the ranks that share a sample, different across data-parallel ranks, and needing no
saved state. With the loader's position and the global RNG states in every checkpoint, a resumed run continues with
exactly the batches, times and noise an uninterrupted run would have used.
"""
import logging
import math
import signal
import time

import numpy as np
from tqdm.auto import tqdm

from mg.optim import set_lr
from mg.training.checkpoint import rng_state, set_rng_state
from mg.training.ema import EMA
from mg.training.state_io import LocalState, ParallelState
from mg.training.train_log import TrainingLog

_logger = logging.getLogger(__name__)


class Trainer:
    """Args:
        step: the step object (its ``model`` and ``optimizer`` are trained).
        loader: an iterable of batches with ``state_dict`` / ``load_state_dict`` (its position); iterated endlessly.
        run: the entered RunDirectory (checkpoints, where to start).
        settings: the TrainSettings.
        seed: env.seed.
        groups: the process groups of a parallel layout (None: one process); only rank 0 logs and saves.
        validate_every: validate (with the EMA weights) every this many steps; 0: never.
        run_config: the resolved config, kept in every checkpoint.
    """

    def __init__(self, *, step, loader, run, settings, seed, groups=None, validate_every=0, run_config=None):
        self.train_step, self.loader, self.run_dir, self.settings, self.seed = step, loader, run, settings, seed
        self.dp_rank = groups.dp_rank if groups is not None else 0
        model, optimizer = step.model, step.optimizer
        self.state = LocalState(model, optimizer) if groups is None else ParallelState(model, optimizer, groups)
        ema = settings.ema
        self.ema = None
        if ema:
            targets, names, publish = self.state.ema_targets()
            self.ema = EMA(targets, ema.decay, ema.warmup, ema.every, names, publish)
        self.lr_policy = settings.lr_policy()
        self.validate_every = validate_every
        self.run_config = run_config or {}
        self.step = 0
        self.stop_requested = False

    # ---- checkpoints ---------------------------------------------------------------------------------------------
    def checkpoint_metadata(self):
        return {**self.train_step.metadata(), "loader": self.loader.state_dict(),
                "lr_policy": self.lr_policy.state_dict(), "rng": rng_state(),
                "ema_updates": self.ema.num_updates if self.ema is not None else 0, "config": self.run_config}

    def save(self):
        """Save a checkpoint of this step (collective under a parallel layout); the path on the rank that wrote it."""
        path = self.state.save(self.run_dir.checkpoints, self.step, self.train_step.extra_state(), self.ema,
                               self.checkpoint_metadata())
        if path is not None:
            _logger.info("saved checkpoint %s", path)
        return path

    def resume(self, path):
        spaces, metadata = self.state.load(path, self.ema)
        self.train_step.load_extra_state(spaces)
        self.loader.load_state_dict(metadata["loader"])
        self.lr_policy.load_state_dict(metadata["lr_policy"])
        set_rng_state(metadata["rng"])
        self.step = int(metadata["step"])
        _logger.info("resumed from %s at step %d", path, self.step)

    # ---- one step ------------------------------------------------------------------------------------------------
    def batches(self):
        while True:
            yield from self.loader

    def update(self, data, rng):
        """One optimizer update over `accumulation_steps` batches: the mean of each scalar."""
        scalars = [self.train_step.train_batch(next(data), self.step, rng)
                   for _ in range(self.train_step.accumulation_steps)]
        return {key: float(np.mean([s[key] for s in scalars])) for key in scalars[0]}

    def validate(self):
        if self.ema is None:
            return self.train_step.validate()
        with self.ema.swapped_in():
            return self.train_step.validate()

    # ---- the loop ------------------------------------------------------------------------------------------------
    def request_stop(self, signum, _frame):
        _logger.warning("signal %d: saving a checkpoint after this step, then exiting", signum)
        self.stop_requested = True

    def run(self):
        """Train up to `settings.steps`; returns the final step (earlier if stopped by SIGTERM)."""
        if self.run_dir.resume_from is not None:
            self.resume(self.run_dir.resume_from)
        previous_handler = signal.signal(signal.SIGTERM, self.request_stop)
        log = None
        if self.state.writes:
            log = TrainingLog(self.run_dir.path, plot_every=self.settings.log.plot_every)
            log.truncate_after(self.step)  # rows an interrupted run logged after its last checkpoint run again
        data = self.batches()
        every, steps = self.settings.log.every, self.settings.steps
        progress = tqdm(total=steps, initial=self.step, desc="train", dynamic_ncols=True,
                        disable=not self.state.writes)
        try:
            while self.step < steps and not self.stop_requested:
                lr = self.lr_policy.lr_at(self.step)
                set_lr(self.train_step.optimizer, lr)
                start = time.perf_counter()
                scalars = self.update(data, np.random.default_rng([self.seed, self.step, self.dp_rank]))
                if not math.isfinite(scalars["loss"]):
                    raise FloatingPointError(f"loss is {scalars['loss']} at step {self.step + 1}: stopping (last "
                                             "checkpoint kept)")
                self.step += 1
                if self.ema is not None:
                    self.ema.update(self.step)
                seconds = time.perf_counter() - start
                progress.update(1)
                progress.set_postfix(loss=f"{scalars['loss']:.4f}", lr=f"{lr:.2e}", s_per_step=f"{seconds:.2f}")
                record = {}
                if self.step % every == 0 or self.step == steps:
                    record.update(scalars, lr=lr, step_seconds=seconds)
                if self.validate_every and self.step % self.validate_every == 0:
                    record["val_loss"] = self.validate()
                    if self.lr_policy.report_validation(record["val_loss"]):
                        _logger.info("validation plateaued: learning rate lowered to %.3g",
                                     self.lr_policy.lr_at(self.step))
                if record and log is not None:
                    log.log(self.step, **record)
                if self.step % self.settings.save.every == 0 or self.step == steps or self.stop_requested:
                    self.save()
        finally:
            progress.close()
            signal.signal(signal.SIGTERM, previous_handler)
        if log is not None:
            log.plot()
        return self.step
