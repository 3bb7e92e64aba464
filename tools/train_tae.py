"""Train the temporal autoencoder.

    python tools/train_tae.py --config configs/tae/train_toy.yaml [--train.steps 200 --train.resume latest ...]

Batches: every `data.image_every`-th batch is an image batch (single frames; 1 image batch per 3 video batches by
default), the others are video clips. Data comes from a CSV of videos (mg.data.VideoDataset, pixel mode; an image
batch takes one random frame from each of `image_batch_size` clips) or, with `data.synthetic`, from generated
moving-shape videos. With `data.crop_size` every sample is cut to a random square window (each at its own place),
and a step costs in proportion to its pixels (on the toy world windows trained a worse TAE: docs/tae.md). Writes to
`train.output_dir`: config.json, log.jsonl/log.csv/loss_curve.png, ckpt/step_*.safetensors (+ .json; model,
optimizers, EMA, loader/RNG state) and, at the end, tae.safetensors (+ .json; EMA weights if EMA is on) for
load_tae, with the latent scale and shift fitted on `train.latent_scale_batches` whole-frame video batches.
"""
import json
import logging
import math
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mg  # noqa: F401  (quiet logging before mindspore loads)
import mindspore as ms
import numpy as np
from jsonargparse import CLI
from tqdm import tqdm

from mg.data.buckets import Bucket
from mg.data.dataset import VideoDataset
from mg.data.loader import VideoDataLoader
from mg.io import load_checkpoint, load_state_dict, state_dict
from mg.models.tae import TemporalAutoencoder, load_tae, save_tae, tae_config
from mg.models.tae.conv import set_compute_dtype
from mg.models.tae.convert import convert_image_vae
from mg.models.tae.losses import PatchDiscriminator, TAELoss, TAELossConfig
from mg.models.tae.synthetic import moving_shapes
from mg.models.tae.trainer import TAETrainStep
from mg.training.checkpoint import CheckpointManager, merge_namespaces, rng_state, set_rng_state, split_namespaces
from mg.training.ema import EMA
from mg.optim import build_adamw, load_optimizer_state, optimizer_state, set_lr
from mg.training.train_log import TrainingLog

_logger = logging.getLogger("train_tae")


@dataclass
class ModelConfig:
    preset: str = "default"                          # tae_config preset
    overrides: dict = field(default_factory=dict)    # TAEConfig fields to change, e.g. {base_channels: 64}
    init_from: str = ""                              # a TAE checkpoint (load_tae) or a diffusers VAE folder to inflate
    logvar_init: float = 0.0                         # from scratch: initial posterior log-variance (the encoder's bias)


@dataclass
class DataConfig:
    csv_path: str = ""             # CSV with a `video` column (see docs/data.md); unused with synthetic
    video_folder: str = ""         # folder relative `video` paths are resolved against
    synthetic: bool = False        # train on generated moving-shape videos instead of a CSV
    height: int = 256
    width: int = 256
    frames: int = 32
    video_batch_size: int = 1
    image_batch_size: int = 4
    image_every: int = 4           # every n-th batch is an image batch (0: videos only)
    crop_size: int = 0             # > 0: train on a random crop_size^2 window of each clip or image (a multiple
                                   # of 8); the latent scale is still fitted on whole frames
    num_workers: int = 2
    seed: int = 42


@dataclass
class TrainConfig:
    output_dir: str = "runs/tae"
    steps: int = 10000
    lr: float = 1e-4
    min_lr: float = -1.0           # >= 0: cosine decay from lr to min_lr over the run after warm-up; < 0: constant lr
    warmup_steps: int = 500
    weight_decay: float = 0.0
    disc_lr: float = 1e-4
    clip_grad_norm: float = 1.0
    precision: str = "fp32"        # fp32 | bf16 (bf16 convolutions; Ascend only, CPU lacks bf16 kernels)
    ema_decay: float = 0.0         # 0 disables EMA
    save_every: int = 1000
    latent_scale_batches: int = 8  # at the end, fit the latent scale/shift on this many video batches (0: keep)
    keep_last: int = 3
    resume: str = ""               # "latest" or a checkpoint path
    jit: bool = True
    seed: int = 0


class _Batches:
    """Endless video batches (from the CSV loader or synthetic) and image batches cut from them."""

    def __init__(self, data: DataConfig):
        if data.crop_size and (data.crop_size % 8 or data.crop_size > min(data.height, data.width)):
            raise ValueError(f"data.crop_size must be a multiple of 8 no larger than data.height and data.width "
                             f"({data.height}x{data.width}), got {data.crop_size}")
        self.data = data
        self.rng = np.random.default_rng(data.seed)
        self.loader = None
        if not data.synthetic:
            if not data.csv_path:
                raise ValueError("data.csv_path is required unless data.synthetic is true")
            bucket = Bucket(data.height, data.width, data.frames, data.video_batch_size)
            dataset = VideoDataset(data.csv_path, [bucket], video_folder=data.video_folder)
            self.loader = VideoDataLoader(dataset, seed=data.seed, num_workers=data.num_workers, drop_last=True)
            if len(self.loader) == 0:
                raise ValueError(f"{data.csv_path}: no video long enough for {data.frames} frames at "
                                 f"{data.height}x{data.width}")
        self._iter = None

    def videos(self):
        d = self.data
        if self.loader is None:
            return moving_shapes(self.rng, d.video_batch_size, d.frames, d.height, d.width)
        while True:
            if self._iter is None:
                self._iter = iter(self.loader)
            try:
                return next(self._iter)["video"]
            except StopIteration:
                self._iter = None

    def get(self, step):
        d = self.data
        batch = self._images() if d.image_every and step % d.image_every == d.image_every - 1 else self.videos()
        return self._crop(batch) if d.crop_size else batch

    def _crop(self, batch):
        """A random window of each sample, placed independently."""
        size = self.data.crop_size
        tops = self.rng.integers(0, batch.shape[-2] - size + 1, len(batch))
        lefts = self.rng.integers(0, batch.shape[-1] - size + 1, len(batch))
        return np.stack([clip[..., y:y + size, x:x + size] for clip, y, x in zip(batch, tops, lefts)])

    def _images(self):
        """One random frame from each of `image_batch_size` different clips. Distinct clips per step matter more than
        pixels per step: with frames of a few clips the TAE learns colour one axis at a time (docs/tae.md)."""
        frames = []
        while len(frames) < self.data.image_batch_size:
            for clip in self.videos()[:self.data.image_batch_size - len(frames)]:
                t = self.rng.integers(0, clip.shape[1])
                frames.append(clip[:, t:t + 1])
        return np.stack(frames)

    def state_dict(self):
        return self.loader.state_dict() if self.loader is not None else {}

    def load_state_dict(self, state):
        if self.loader is not None and state:
            self.loader.load_state_dict(state)


def _build_tae(model: ModelConfig):
    if not model.init_from:
        tae = TemporalAutoencoder(tae_config(model.preset, **model.overrides))
        tae.encoder.set_logvar_bias(model.logvar_init)
        return tae
    source = Path(model.init_from)
    tae = convert_image_vae(source) if source.is_dir() else load_tae(source)
    _logger.info("initialised from %s", source)
    return tae


def _learning_rate(train: TrainConfig, step):
    """Linear warm-up, then constant or (min_lr >= 0) a cosine decay to min_lr at the last step."""
    warm = min(1.0, (step + 1) / max(1, train.warmup_steps))
    if train.min_lr < 0 or step < train.warmup_steps:
        return train.lr * warm
    progress = (step - train.warmup_steps) / max(1, train.steps - 1 - train.warmup_steps)
    return train.min_lr + (train.lr - train.min_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _finish(tae, batches, train: TrainConfig, out):
    """Fit the latent scale (the DiT trains on scale_latent(z)) and write tae.safetensors."""
    if train.latent_scale_batches:
        tae.set_train(False)
        cfg = tae.fit_latent_scale(batches.videos() for _ in range(train.latent_scale_batches))
        _logger.info("latent shift %.4f, scale %.4f (from %d video batches)", cfg.shift_factor, cfg.scaling_factor,
                     train.latent_scale_batches)
    save_tae(tae, out / "tae.safetensors")


def main(model: ModelConfig = ModelConfig(), loss: TAELossConfig = TAELossConfig(), data: DataConfig = DataConfig(),
         train: TrainConfig = TrainConfig()):
    """Train a TAE (see the module docstring for what is written where)."""
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    out = Path(train.output_dir)
    if (out / "tae.safetensors").exists():
        raise FileExistsError(f"{out}/tae.safetensors exists: this run has finished; choose another train.output_dir")
    if out.exists() and any(out.iterdir()) and not train.resume:
        raise FileExistsError(f"{out} is not empty; pass --train.resume latest to continue it, or choose another dir")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({"model": asdict(model), "loss": asdict(loss), "data": asdict(data),
                                                 "train": asdict(train)}, indent=2))
    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_seed(train.seed)

    tae = _build_tae(model)
    if train.precision == "bf16":
        if ms.get_context("device_target") == "CPU":
            raise ValueError("train.precision=bf16 needs Ascend: MindSpore's CPU backend has no bf16 conv/matmul")
        set_compute_dtype(tae, ms.bfloat16)
    elif train.precision != "fp32":
        raise ValueError(f"train.precision must be fp32 or bf16, got {train.precision!r}")
    disc = PatchDiscriminator(channels=loss.disc_channels, num_layers=loss.disc_layers) if loss.disc_weight else None
    criterion = TAELoss(loss, disc)
    optimizer = build_adamw(tae.trainable_params(), lr=train.lr, weight_decay=train.weight_decay)
    disc_opt = build_adamw(disc.trainable_params(), lr=train.disc_lr, weight_decay=0.0) if disc else None
    step_fn = TAETrainStep(tae, criterion, optimizer, disc_opt, jit=train.jit, clip_grad_norm=train.clip_grad_norm)
    ema = EMA(tae.trainable_params(), decay=train.ema_decay) if train.ema_decay else None
    batches = _Batches(data)
    manager = CheckpointManager(out / "ckpt", keep_last=train.keep_last)
    log = TrainingLog(out, plot_every=max(1, train.save_every // 10))

    start = 0
    if train.resume:
        path = manager.resolve(train.resume)
        tensors, meta = load_checkpoint(path)
        parts = split_namespaces(tensors)
        load_state_dict(tae, parts["model"])
        load_optimizer_state(optimizer, parts["opt"])
        if disc is not None:
            load_state_dict(disc, parts["disc"])
            load_optimizer_state(disc_opt, parts["disc_opt"])
        if ema is not None:
            ema.load_state_dict(parts["ema"], meta.get("ema_updates", 0))
        batches.load_state_dict(meta.get("loader", {}))
        set_rng_state(meta["rng"], {"batches": batches.rng})
        start = meta["step"] + 1
        log.truncate_after(meta["step"])
        _logger.info("resumed from %s at step %d", path, start)

    def save(step):
        parts = {"model": state_dict(tae), "opt": optimizer_state(optimizer)}
        if disc is not None:
            parts.update(disc=state_dict(disc), disc_opt=optimizer_state(disc_opt))
        if ema is not None:
            parts["ema"] = ema.state_dict()
        meta = {"loader": batches.state_dict(), "rng": rng_state({"batches": batches.rng}),
                "ema_updates": ema.num_updates if ema else 0, "tae_config": tae.config.to_dict()}
        manager.save(step, merge_namespaces(parts), meta)

    for step in tqdm(range(start, train.steps), desc="train TAE", unit="step", initial=start, total=train.steps):
        lr = _learning_rate(train, step)
        set_lr(optimizer, lr)
        scalars = step_fn(ms.Tensor(batches.get(step)), step)
        if ema is not None:
            ema.update()
        log.log(step, **scalars, lr=lr)
        if (step + 1) % train.save_every == 0 or step + 1 == train.steps:
            save(step)
    log.plot()
    with ema.swapped_in() if ema is not None else nullcontext():
        _finish(tae, batches, train, out)
    _logger.info("done: %s", out / "tae.safetensors")


if __name__ == "__main__":
    CLI(main, as_positional=False)
