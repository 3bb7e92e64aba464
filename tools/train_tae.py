"""Train the temporal autoencoder.

    python tools/train_tae.py --config configs/tae/train_toy.yaml [--train.steps 200 --train.resume latest ...]

The training loop is train.py's (mg.training.trainer), with the same `env` and `train` options (docs/training.md);
`model`, `loss` and `data` are the TAE's. Batches (`data`, bound to mg.training.tae_step.TAEBatches): every
`data.image_every`-th batch is an image batch (one random frame from each of `data.image_batch_size` clips), the
others are video clips, from a CSV of videos or, with `data.synthetic`, generated moving shapes; `data.crop_size`
cuts every sample to a random square window (on the toy world windows trained a worse TAE: docs/tae.md). Writes to
`train.output_path` what train.py writes (config.yaml, train.log, log.jsonl/log.csv/loss_curve.png, ckpt/step_*
with the model, optimizers, EMA, the discriminator, loader and RNG state) and, once `train.steps` are done,
tae.safetensors (+ tae.json; the EMA weights if the EMA is on) for load_tae, with the latent scale and shift fitted
on `model.latent_scale_batches` whole-frame video batches.
"""
import mg  # noqa: F401  (quiet logging before mindspore loads)

import json
import logging
import sys
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import mindspore as ms
from jsonargparse import ActionConfigFile, ArgumentParser

from mg.models.tae import TemporalAutoencoder, load_tae, save_tae, tae_config
from mg.models.tae.conv import set_compute_dtype
from mg.models.tae.convert import convert_image_vae
from mg.models.tae.losses import PatchDiscriminator, TAELoss, TAELossConfig
from mg.optim import build_adamw
from mg.training.run_dir import RunDirectory
from mg.training.settings import EnvSettings, TrainSettings, set_up_environment
from mg.training.tae_step import TAEBatches, TAETrainStep
from mg.training.trainer import Trainer

_logger = logging.getLogger("train_tae")
EXPORT_NAME = "tae.safetensors"


@dataclass
class TAEModelSettings:
    """preset: a tae_config preset; overrides: TAEConfig fields to change (e.g. {base_channels: 64}). init_from: a TAE
    checkpoint (load_tae) or a diffusers VAE folder to inflate; else from scratch with the encoder's log-variance
    bias at `logvar_init`. dtype: fp32 or bf16 convolutions (bf16: Ascend only). latent_scale_batches: at the end,
    fit the latent scale/shift on this many video batches (0: keep the config's). trainable: "all", or "decoder"
    (with init_from): the encoder, and so the latent space and its scale, stay as they are, so transformers trained
    on its latents keep working while the decoder learns to draw what it drew badly."""
    preset: str = "default"
    overrides: dict = field(default_factory=dict)
    init_from: str = ""
    logvar_init: float = 0.0
    dtype: str = "fp32"
    latent_scale_batches: int = 8
    trainable: str = "all"

    def __post_init__(self):
        if self.dtype not in ("fp32", "bf16"):
            raise ValueError(f"model.dtype must be fp32 or bf16, got {self.dtype!r}")
        if self.trainable not in ("all", "decoder") or (self.trainable == "decoder" and not self.init_from):
            raise ValueError(f"model.trainable must be all or decoder (which needs model.init_from: a trained TAE), "
                             f"got {self.trainable!r}")
        if self.init_from and not Path(self.init_from).exists():
            raise ValueError(f"model.init_from {self.init_from}: no such file or folder")
        if self.latent_scale_batches < 0:
            raise ValueError(f"model.latent_scale_batches must be >= 0, got {self.latent_scale_batches}")


@dataclass
class TAELossSettings(TAELossConfig):
    """The loss weights (mg.models.tae.losses.TAELossConfig) and the learning rate of the discriminator's AdamW."""
    disc_lr: float = 1e-4


def build_parser():
    parser = ArgumentParser(description=__doc__.split("\n\n")[0], default_meta=False)
    parser.add_argument("--config", action=ActionConfigFile, help="YAML config file")
    parser.add_class_arguments(EnvSettings, "env")
    parser.add_class_arguments(TAEModelSettings, "model")
    parser.add_class_arguments(TAELossSettings, "loss")
    parser.add_class_arguments(TAEBatches, "data")
    parser.add_class_arguments(TrainSettings, "train")
    return parser


def parse(parser, argv):
    """(the config as parsed, the same with the settings sections built); a bad value is a parser error."""
    cfg = parser.parse_args(argv)
    try:
        built = parser.instantiate(cfg)
    except ValueError as err:
        parser.error(str(err))
    if built.train.settings.gradient_accumulation_steps != 1 or built.train.settings.zero_stage:
        parser.error("train.settings.gradient_accumulation_steps and zero_stage: the TAE's step updates on every "
                     "batch in one process (set them to 1 and 0)")
    export = Path(built.train.output_path) / EXPORT_NAME
    if export.exists():
        parser.error(f"{export} exists: that run has finished; choose another train.output_path")
    return cfg, built


def build_tae(settings: TAEModelSettings):
    if not settings.init_from:
        tae = TemporalAutoencoder(tae_config(settings.preset, **settings.overrides))
        tae.encoder.set_logvar_bias(settings.logvar_init)
    else:
        source = Path(settings.init_from)
        tae = convert_image_vae(source) if source.is_dir() else load_tae(source)
        _logger.info("initialised from %s", source)
    if settings.dtype == "bf16":
        set_compute_dtype(tae, ms.bfloat16)
    return tae


def export(tae, batches, latent_scale_batches, path):
    """Fit the latent scale (the DiT trains on scale_latent(z)) and write the TAE for load_tae."""
    if latent_scale_batches:
        tae.set_train(False)
        cfg = tae.fit_latent_scale(batches.videos() for _ in range(latent_scale_batches))
        _logger.info("latent shift %.4f, scale %.4f (from %d video batches)", cfg.shift_factor, cfg.scaling_factor,
                     latent_scale_batches)
    save_tae(tae, path)
    _logger.info("done: %s", path)


def main(argv=None):
    parser = build_parser()
    cfg, built = parse(parser, argv)
    env, model, loss, settings = built.env, built.model, built.loss, built.train
    set_up_environment(env)
    if model.dtype == "bf16" and ms.get_context("device_target") == "CPU":
        parser.error("model.dtype bf16 needs Ascend: MindSpore's CPU backend has no bf16 conv/matmul")
    batches = built.data
    with RunDirectory(settings) as run:
        run.write_config(parser.dump(cfg))
        tae = build_tae(model)
        opt, disc, disc_optimizer = settings.optimizer, None, None
        if loss.disc_weight:
            disc = PatchDiscriminator(channels=loss.disc_channels, num_layers=loss.disc_layers)
            disc_optimizer = build_adamw(disc.trainable_params(), lr=loss.disc_lr, weight_decay=0.0)
        learned = tae.decoder if model.trainable == "decoder" else tae
        optimizer = build_adamw(learned.trainable_params(), lr=opt.lr, weight_decay=opt.weight_decay,
                                betas=tuple(opt.betas), eps=opt.eps)
        step = TAETrainStep(tae, TAELoss(loss, disc), optimizer, disc_optimizer, jit=env.mode == 0,
                            clip_grad_norm=settings.settings.clip_grad_norm)
        trainer = Trainer(step=step, loader=batches, run=run, settings=settings, seed=env.seed,
                          run_config=json.loads(parser.dump(cfg, format="json")))
        done = trainer.run()
        if done == settings.steps:
            with trainer.ema.swapped_in() if trainer.ema is not None else nullcontext():
                export(tae, batches, model.latent_scale_batches if model.trainable == "all" else 0,
                       run.path / EXPORT_NAME)
        return done


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
