"""The options both training entry points share (train.py for the DiT, tools/train_tae.py for the TAE): the `env`
and `train` sections. Each section is a dataclass the entry point binds with jsonargparse; `__post_init__` checks the
values, so a bad one fails at start, before anything is built, with a message naming the option.
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Tuple, Union

import mindspore as ms

from mg.training.lr_policy import LRSchedulerSettings


def _at_least(option: str, value, minimum) -> None:
    if value < minimum:
        raise ValueError(f"{option} must be >= {minimum}, got {value}")


def parse_memory_size(text: str) -> int:
    """Bytes of a size written as MindSpore's max_device_memory is ("59GB", "512MB"; binary units)."""
    units = {"KB": 2 ** 10, "MB": 2 ** 20, "GB": 2 ** 30, "TB": 2 ** 40}
    value = str(text).strip().upper()
    for unit, scale in units.items():
        if value.endswith(unit):
            try:
                return int(float(value[:-len(unit)]) * scale)
            except ValueError:
                break
    raise ValueError(f"env.max_device_memory must be a size such as 59GB or 512MB, got {text!r}")


@dataclass
class EnvSettings:
    """mode: 0 = graph (the train step is compiled with ms.jit), 1 = PyNative. seed: of the weights' initialisation
    and of everything random in a step. device_target: None keeps MindSpore's default. jit_level and
    max_device_memory: Ascend only."""
    mode: int = 0
    seed: int = 42
    device_target: Optional[str] = None
    jit_level: str = "O1"
    max_device_memory: Optional[str] = None

    def __post_init__(self):
        if self.mode not in (0, 1):
            raise ValueError(f"env.mode must be 0 (graph: ms.jit) or 1 (PyNative), got {self.mode}")
        _at_least("env.seed", self.seed, 0)
        if self.max_device_memory is not None:
            parse_memory_size(self.max_device_memory)


def set_up_environment(env: EnvSettings) -> list[str]:
    """Apply the env options; returns the ones that mean nothing on this device (for the log)."""
    if env.device_target:
        ms.set_device(env.device_target)
    ms.set_context(mode=ms.PYNATIVE_MODE)  # graph mode comes from ms.jit on the train step (env.mode 0)
    ms.set_seed(env.seed)
    if ms.get_context("device_target") == "Ascend":
        ms.set_context(jit_config={"jit_level": env.jit_level})
        if env.max_device_memory:
            ms.set_context(max_device_memory=env.max_device_memory)
        return []
    ignored = [f"env.jit_level {env.jit_level} (Ascend's compiler level; ms.jit compiles the step here)"]
    if env.max_device_memory:
        ignored.append(f"env.max_device_memory {env.max_device_memory} as MindSpore's device limit (the memory "
                       "plan is still checked against it)")
    return ignored


@dataclass
class OptimizerSettings:
    """AdamW (decoupled weight decay, none on norms, embeddings and biases)."""
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: Tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8


@dataclass
class StepSettings:
    """gradient_accumulation_steps: loader batches per optimizer update (their gradients are averaged).
    clip_grad_norm: clip the gradients to this global norm (0: no clipping). zero_stage: ZeRO sharding of the
    optimizer state over data-parallel ranks (train.py under msrun)."""
    gradient_accumulation_steps: int = 1
    clip_grad_norm: float = 1.0
    zero_stage: int = 0

    def __post_init__(self):
        _at_least("train.settings.gradient_accumulation_steps", self.gradient_accumulation_steps, 1)
        _at_least("train.settings.clip_grad_norm", self.clip_grad_norm, 0)


@dataclass
class EMASettings:
    """decay: shadow = decay * shadow + (1 - decay) * weights, per step. warmup: a smaller decay for the first
    updates. every: update the EMA every this many steps (with decay ** every: the same horizon), which divides its
    cost (mg.training.ema, docs/training.md)."""
    decay: float = 0.9999
    warmup: bool = False
    every: int = 1

    def __post_init__(self):
        _at_least("train.ema.every", self.every, 1)


@dataclass
class SaveSettings:
    """every: a checkpoint after every this many steps (and after the last). ckpt_save_policy (the seed's name):
    "latest_k" keeps the newest `keep_last` checkpoints, "all" keeps every one (e.g. to average or compare them)."""
    every: int = 1000
    keep_last: int = 3
    ckpt_save_policy: Literal["latest_k", "all"] = "latest_k"

    def __post_init__(self):
        _at_least("train.save.every", self.every, 1)
        _at_least("train.save.keep_last", self.keep_last, 1)

    @property
    def kept(self) -> Optional[int]:
        """How many checkpoints to keep (None: all)."""
        return self.keep_last if self.ckpt_save_policy == "latest_k" else None


@dataclass
class LogSettings:
    """every: a log row after every this many steps (and after the last). plot_every: redraw loss_curve.png after
    this many steps (0: only at the end)."""
    every: int = 10
    plot_every: int = 100

    def __post_init__(self):
        _at_least("train.log.every", self.every, 1)
        _at_least("train.log.plot_every", self.plot_every, 0)


@dataclass
class TrainSettings:
    """output_path: the run's folder. steps: optimizer updates in total (a resumed run continues up to it; step N in
    the log and checkpoint step_N come after N updates). resume: "latest" (the newest complete checkpoint of
    output_path; a run stopped before its first checkpoint starts again from step 0), or a checkpoint directory or
    file; null (or "") starts a new run. ema: null (or "") disables the EMA."""
    output_path: str = "output"
    steps: int = 1000
    resume: Optional[str] = None
    settings: StepSettings = field(default_factory=StepSettings)
    optimizer: OptimizerSettings = field(default_factory=OptimizerSettings)
    lr_scheduler: LRSchedulerSettings = field(default_factory=LRSchedulerSettings)
    ema: Optional[Union[EMASettings, Literal[""]]] = field(default_factory=EMASettings)
    save: SaveSettings = field(default_factory=SaveSettings)
    log: LogSettings = field(default_factory=LogSettings)

    def __post_init__(self):
        self.resume, self.ema = self.resume or None, self.ema or None  # "" as null: handy in shell scripts
        if self.lr_scheduler.lr is not None:  # the seed's name for the learning rate: given, it sets it
            self.optimizer.lr = self.lr_scheduler.lr
        if Path(self.output_path).exists() and not Path(self.output_path).is_dir():
            raise ValueError(f"train.output_path {self.output_path} is a file, not a folder")
        _at_least("train.steps", self.steps, 1)
        try:  # the policies check their own settings: build one now so a bad value fails at start
            self.lr_policy()
        except ValueError as err:
            raise ValueError(f"train.lr_scheduler / train.optimizer.lr: {err}") from None

    def lr_policy(self):
        """A fresh learning-rate policy for this run (mg.training.lr_policy)."""
        return self.lr_scheduler.build(self.optimizer.lr, self.steps)
