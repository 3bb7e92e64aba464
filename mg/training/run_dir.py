"""The output folder of a training run (``train.output_path``): held by one run at a time, it decides where the run
starts, and holds the resolved config, train.log and the checkpoints (ckpt/).

- Lock: ``run.lock`` is `fcntl.flock`-ed for the whole run, so a second run on the folder fails at start, naming the
  process that holds it; the operating system releases the lock when that process dies, however it dies. Under a
  parallel layout only the writing rank (rank 0) takes it.
- Start: a folder holding a run (its config.yaml) is refused unless ``--train.resume`` is given. ``latest`` resumes
  from the newest complete checkpoint; in a run that was stopped before its first checkpoint it starts again from
  step 0 (with a warning; the trainer drops the old log rows).
"""
from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

from mg.io import atomic_path, remove_stale_temporaries
from mg.training.checkpoint import CheckpointManager

_logger = logging.getLogger(__name__)

LOCK_NAME = "run.lock"
CONFIG_NAME = "config.yaml"
RESUMED_CONFIG_NAME = "config_resumed.yaml"
LOG_NAME = "train.log"


class RunDirectory:
    """Use as a context manager around the whole run: entering takes the lock (writing rank), cleans up what killed
    writers left and decides `resume_from` (a checkpoint path, or None to start at step 0); leaving releases the
    lock and stops writing train.log. ``settings`` is the `TrainSettings` of the run."""

    def __init__(self, settings, writes: bool = True):
        self.path = Path(settings.output_path)
        self.resume = settings.resume
        self.keep_last = settings.save.kept
        self.writes = writes
        self.checkpoints = None
        self.resume_from = None
        self._lock_fd = None
        self._handlers = []

    def __enter__(self) -> RunDirectory:
        try:
            if self.writes:
                self.path.mkdir(parents=True, exist_ok=True)
                self._lock()
                remove_stale_temporaries(self.path)
                self._log_to_files()
            self.checkpoints = CheckpointManager(self.path / "ckpt", keep_last=self.keep_last, cleanup=self.writes)
            self.resume_from = self._starting_checkpoint()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_):
        self.close()

    def close(self) -> None:
        root = logging.getLogger()
        for handler in self._handlers:
            root.removeHandler(handler)
            handler.close()
        self._handlers = []
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def _lock(self) -> None:
        fd = os.open(self.path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RuntimeError(f"{self.path} is in use by another training run (pid {holder}); wait for it to end "
                               "or choose another --train.output_path") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _log_to_files(self) -> None:
        """INFO and above to train.log, warnings also to the console."""
        root = logging.getLogger()
        root.setLevel(logging.INFO)
        to_file = logging.FileHandler(self.path / LOG_NAME)
        to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        to_console = logging.StreamHandler()
        to_console.setLevel(logging.WARNING)
        to_console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        for handler in (to_file, to_console):
            root.addHandler(handler)
            self._handlers.append(handler)

    def _starting_checkpoint(self):
        holds_run = (self.path / CONFIG_NAME).exists()
        if self.resume is None:
            if holds_run and self.writes:
                if self.checkpoints.latest() is not None:
                    raise FileExistsError(f"{self.path} already holds a run; pass --train.resume latest to continue "
                                          "it, or choose another --train.output_path")
                raise FileExistsError(f"{self.path} holds a run that stopped before its first checkpoint (no "
                                      "complete checkpoint in ckpt/); pass --train.resume latest to start it again "
                                      "from step 0, or choose another --train.output_path")
            return None
        if self.resume != "latest":
            return self.checkpoints.resolve(self.resume)
        latest = self.checkpoints.latest()
        if latest is None and self.writes:
            if not holds_run:
                raise FileNotFoundError(f"--train.resume latest: {self.path} holds no run to continue (no "
                                        f"{CONFIG_NAME}); leave out --train.resume to start one")
            _logger.warning("--train.resume latest: %s has no complete checkpoint (the run was stopped before its "
                            "first): starting from step 0", self.path)
        return latest

    def write_config(self, text: str) -> None:
        """The resolved config, as config.yaml (config_resumed.yaml when resuming from a checkpoint)."""
        if not self.writes:
            return
        name = RESUMED_CONFIG_NAME if self.resume_from is not None else CONFIG_NAME
        with atomic_path(self.path / name, overwrite=True) as temporary:
            temporary.write_text(text)
