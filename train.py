"""Train the Movie Gen transformer with flow matching.

    python train.py --config configs/train/stage1_t2i_256px.yaml --train.steps 100 --train.output_path out/

Every YAML section is bound to the signature of what it builds (model: DiTConfig, dataset: VideoDataset,
dataloader: VideoDataLoader, flow: FlowMatching, condition: ConditionTasks (what a conditioned model,
model.condition_channels > 0, is trained to start from), env / train: the settings in mg.training.settings, valid /
tae / text_encoders: below); unknown keys, wrong types and bad values fail before anything runs, naming the key. The
resolved config is saved to the output directory. The options shared with tools/train_tae.py are in docs/training.md.
"""
import mg  # noqa: F401  (quiet MindSpore logging before it is imported)

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Literal, Optional

import mindspore as ms
import numpy as np
from jsonargparse import ActionConfigFile, ArgumentParser

from mg.backends import apply_recompute, fused_on
from mg.data import VideoDataLoader, VideoDataset
from mg.data.buckets import parse_buckets
from mg.data.conditions import TASKS, ConditionTasks
from mg.data.loader import bucket_batch_sizes
from mg.models.clip_vision import read_clip_vision_config
from mg.models.dit import DiTConfig
from mg.models.dit.embeddings import SPATIAL_GROWTH
from mg.models.tae.io import load_tae, load_tae_config
from mg.models.text_encoders import build_text_encoder
from mg.optim import build_adamw
from mg.parallel import ParallelAdamW, ParallelConfig, init_parallel
from mg.parallel.groups import launched_processes
from mg.parallel.memory import Layout, Workload, format_bytes, plan_memory
from mg.schedulers import FlowMatching
from mg.training.checkpoint import find_checkpoint
from mg.training.dit_init import build_dit
from mg.training.inputs import ModelInputs
from mg.training.pixel_loss import PixelLossSettings, PixelSupervisedStep
from mg.training.run_dir import RunDirectory
from mg.training.settings import EnvSettings, TrainSettings, parse_memory_size, set_up_environment
from mg.training.train_step import FlowMatchingTrainStep
from mg.training.trainer import Trainer

_logger = logging.getLogger("train")


@dataclass
class DiTEnvSettings(EnvSettings):
    """distributed: run under msrun with the `parallel` layout."""
    distributed: bool = False


@dataclass
class ValidSettings:
    """Held-out CSV (null or "" disables validation); it is read with the training dataset's other settings. dataset:
    the seed scripts' name for it (given, it replaces csv_path). every: validate (with the EMA weights) after every this many steps; the plateau
    learning-rate policy follows the result."""
    csv_path: Optional[str] = None
    dataset: Optional[str] = None
    every: int = 500
    num_t: int = 8
    max_batches: int = 16
    seed: int = 0

    def __post_init__(self):
        for name in ("every", "num_t", "max_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"valid.{name} must be >= 1, got {getattr(self, name)}")
        if self.dataset is not None:  # given, it replaces csv_path; "" disables validation, as in the seed's scripts
            self.csv_path = self.dataset
        self.csv_path = self.csv_path or None


@dataclass
class TAESettings:
    """path: the TAE checkpoint; its config gives the latent scale/shift, its weights encode pixel batches."""
    path: str
    tiled: bool = True


@dataclass
class TextEmbFolders:
    """Cached text-embedding folders by encoder (a folder per encoder; the seed scripts' option)."""
    ul2: Optional[str] = None
    byt5: Optional[str] = None
    metaclip: Optional[str] = None


@dataclass
class TextEncoderSpec:
    path: str
    max_length: int


def build_parser():
    parser = ArgumentParser(description=__doc__.split("\n\n")[0], default_meta=False)
    parser.add_argument("--config", action=ActionConfigFile, help="YAML config file")
    parser.add_class_arguments(DiTEnvSettings, "env")
    parser.add_class_arguments(DiTConfig, "model", instantiate=False)
    parser.add_argument("--model.pretrained_model_path", type=Optional[str], default=None,
                        help="checkpoint of the previous stage, or its run's ckpt/ folder (the newest checkpoint); "
                             "positional tables are grown to this model's")
    parser.add_argument("--model.spatial_table_growth", type=Literal[SPATIAL_GROWTH], default="extend",
                        help="how the previous stage's spatial positional tables grow: extend (same resolution: "
                             "learned rows stay) or interpolate (higher resolution); the temporal table extends")
    parser.add_argument("--model.reference_encoder_path", type=Optional[str], default=None,
                        help="a Hugging Face-format CLIP vision checkpoint directory (personalization): it gives "
                             "model.reference_encoder when that is unset, and the tower starts from its weights "
                             "unless the pretrained checkpoint has one")
    parser.add_argument("--model.freeze_reference_encoder", type=bool, default=False,
                        help="keep the reference tower's weights fixed (the paper's first personalization stages)")
    parser.add_argument("--model.recompute_every", type=int, default=0,
                        help="recompute the activations of every n-th block in the backward pass (0: none; compiled "
                             "on CPU only 1 works)")
    parser.add_class_arguments(TAESettings, "tae")
    parser.add_argument("--text_encoders", type=Optional[Dict[str, TextEncoderSpec]], default=None,
                        help="encoders run on the fly ({kind: {path, max_length}}); null when embeddings are cached")
    parser.add_class_arguments(VideoDataset, "dataset", skip={"reference_size"}, instantiate=False)
    parser.add_argument("--dataset.text_emb_folder", type=Optional[TextEmbFolders], default=None,
                        help="the seed scripts' form of dataset.text_emb_folders, which it replaces when given: one "
                             "folder per encoder (--dataset.text_emb_folder.ul2 DIR --dataset.text_emb_folder.byt5 DIR)")
    parser.add_class_arguments(VideoDataLoader, "dataloader", skip={"dataset", "rank", "world_size"},
                               instantiate=False)
    parser.add_class_arguments(ConditionTasks, "condition")
    parser.add_class_arguments(FlowMatching, "flow")
    parser.add_class_arguments(TrainSettings, "train")
    parser.add_class_arguments(PixelLossSettings, "pixel_loss")
    parser.add_class_arguments(ValidSettings, "valid")
    parser.add_class_arguments(ParallelConfig, "parallel")
    return parser


def parse(parser, argv):
    """(the config as parsed, the same with the settings sections built); a bad value is a parser error."""
    cfg = parser.parse_args(argv)
    try:
        built = parser.instantiate(cfg)
    except ValueError as err:
        parser.error(str(err))
    per_encoder = cfg.dataset.pop("text_emb_folder", None)  # the seed scripts' form of dataset.text_emb_folders
    if per_encoder is not None:
        cfg.dataset.text_emb_folders = {kind: folder for kind, folder in per_encoder.items() if folder}
    # the seed's names resolved, so the saved config says what the run does
    cfg.valid.pop("dataset", None)
    cfg.valid.csv_path = built.valid.csv_path
    cfg.train.lr_scheduler.lr = None
    cfg.train.optimizer.lr = built.train.optimizer.lr
    cfg.train.ema = cfg.train.ema or None
    if built.train.settings.zero_stage and not built.env.distributed:
        parser.error("train.settings.zero_stage > 0 shards over data-parallel ranks: it needs --env.distributed "
                     "true under msrun (or set it to 0)")
    if cfg.model.condition_channels not in (0, cfg.model.in_channels + 1):
        parser.error(f"model.condition_channels must be 0 (text-to-video) or model.in_channels + 1 = "
                     f"{cfg.model.in_channels + 1} (a known latent and its mask), got {cfg.model.condition_channels}")
    if cfg.model.num_tasks not in (0, len(TASKS)) or (cfg.model.num_tasks and not cfg.model.condition_channels):
        parser.error(f"model.num_tasks must be 0 or {len(TASKS)} (the tasks {list(TASKS)}), with condition_channels "
                     f"(an edit's source is its condition), got {cfg.model.num_tasks}")
    if cfg.model.dtype == "bf16" and not fused_on(built.env.device_target or ms.get_context("device_target")):
        parser.error("model.dtype bf16 needs Ascend: MindSpore's CPU kernels have no bf16 (use --model.dtype fp32)")
    check_reference_encoder(parser, cfg, built)
    if built.pixel_loss.weight > 0:
        if built.parallel.tp > 1 or built.parallel.cp > 1:
            parser.error("pixel_loss.weight > 0 decodes each rank's whole latents: it runs under data parallelism "
                         "(parallel.dp, ZeRO) only, not with parallel.tp or parallel.cp > 1")
        cfg.dataset.pixels = True  # the real frames are the pixel loss's targets
    elif cfg.dataset.pixels:
        parser.error("dataset.pixels reads every clip's frames for the pixel loss: set pixel_loss.weight > 0, or "
                     "leave dataset.pixels false")
    if launched_processes() > 1 and not built.env.distributed:
        parser.error(f"msrun launched {launched_processes()} processes but env.distributed is false: every process "
                     "would train alone into the same folder (pass --env.distributed true)")
    try:  # the latent scale comes from the TAE's config (in latent mode the sidecar may be all there is of it)
        load_tae_config(built.tae.path)
    except (FileNotFoundError, ValueError) as err:
        what = err if Path(built.tae.path).exists() else "no such file (nor a sidecar config beside it)"
        parser.error(f"tae.path {built.tae.path}: {what}")
    return cfg, built


def check_reference_encoder(parser, cfg, built):
    """model.reference_encoder from model.reference_encoder_path (or the two agreeing), and freezing only where
    checkpoints keep frozen weights."""
    path = cfg.model.reference_encoder_path
    if path:
        try:
            tower = read_clip_vision_config(path).to_dict()
        except (FileNotFoundError, ValueError) as err:
            parser.error(f"model.reference_encoder_path: {err}")
        given = cfg.model.reference_encoder
        if given is not None and model_config(cfg).reference_encoder != tower:
            parser.error(f"model.reference_encoder {dict(given)} is not the architecture of "
                         f"model.reference_encoder_path {path} ({tower}): give one of them")
        cfg.model.reference_encoder = tower
    if cfg.model.freeze_reference_encoder:
        if cfg.model.reference_encoder is None:
            parser.error("model.freeze_reference_encoder: the model has no reference encoder (set "
                         "model.reference_encoder_path)")
        if built.env.distributed:
            parser.error("model.freeze_reference_encoder runs in one process only (a parallel layout's checkpoints "
                         "keep trained parameters only)")


# model.* options, not DiTConfig
TRAINING_ONLY = ("pretrained_model_path", "spatial_table_growth", "recompute_every", "reference_encoder_path",
                 "freeze_reference_encoder")


def model_config(cfg):
    return DiTConfig(**{k: v for k, v in cfg.model.as_dict().items() if k not in TRAINING_ONLY})


def build_model(cfg, seed, groups=None, sp=False, zero_stage=0):
    """This rank's part of the model, never built whole (mg.training.dit_init)."""
    pretrained = None
    if cfg.model.pretrained_model_path:
        pretrained = find_checkpoint(cfg.model.pretrained_model_path, "--model.pretrained_model_path")
    model = build_dit(model_config(cfg), seed, groups, sp, zero_stage, pretrained, cfg.model.spatial_table_growth,
                      cfg.model.reference_encoder_path)
    if cfg.model.freeze_reference_encoder:
        for param in model.reference_encoder.get_parameters():
            param.requires_grad = False
    return model


def dataset_settings(cfg, **changes):
    """The dataset's arguments: the config's, the reference image size of a model with a reference tower, `changes`."""
    tower = model_config(cfg).reference_encoder
    return {**cfg.dataset.as_dict(), "reference_size": tower["image_size"] if tower else None, **changes}


def build_inputs(cfg, dataset, tae=None):
    """The batch -> model inputs conversion, checked against the dataset before any model is built. `tae`: the
    loaded TAE, if the run has one (pixel mode needs it to encode)."""
    encoders = {kind: build_text_encoder(kind, spec.path, spec.max_length)
                for kind, spec in (cfg.text_encoders or {}).items()}
    config = model_config(cfg)
    inputs = ModelInputs(config.text_encoders, load_tae_config(cfg.tae.path), tae, encoders, cfg.tae.tiled)
    inputs.check(dataset, config)
    return inputs


PIXEL_LOSS_UNPLANNED = ("the memory plan leaves out the pixel loss's TAE decoder (its weights and its activations at "
                        "full resolution): leave room for them (docs/post_training.md)")

# Text tokens the plan assumes per encoder when no cache or encoder says: the seed's caches (ul2_emb_300,
# byt5_emb_100) and long-prompt MetaCLIP's 256
PLAN_TEXT_TOKENS = {"ul2": 300, "byt5": 100, "metaclip": 256}


def text_tokens(cfg, config, dataset=None):
    """Text tokens per sample: the cached embeddings' lengths, the on-the-fly encoders' max_length, or the seed's."""
    lengths = dict(PLAN_TEXT_TOKENS)
    lengths.update({kind: spec.max_length for kind, spec in (cfg.text_encoders or {}).items()})
    if dataset is not None:
        lengths.update({kind: shape[0] for kind, shape in dataset.text_shapes.items()})
    return sum(lengths.get(kind, 256) for kind in config.text_encoders)


def memory_plan(cfg, built, layout, dataset=None):
    """(MemoryPlan, bucket) of the bucket that needs the most device memory (mg.parallel.memory)."""
    config = model_config(cfg)
    buckets = parse_buckets([dict(b) if isinstance(b, dict) else b.as_dict() if hasattr(b, "as_dict") else b
                             for b in cfg.dataset.buckets])
    sizes = bucket_batch_sizes(buckets, cfg.dataloader.as_dict().get("batch_size"))
    kernels = "fused" if fused_on(built.env.device_target or ms.get_context("device_target")) else "plain"
    plans = []
    for bucket, size in zip(buckets, sizes):
        workload = Workload(size, bucket.frames, bucket.height, bucket.width, text_tokens(cfg, config, dataset),
                            built.train.settings.gradient_accumulation_steps, bool(built.train.ema),
                            cfg.model.recompute_every, kernels, built.env.mode == 0)
        plans.append((plan_memory(config, layout, workload), bucket))
    return max(plans, key=lambda item: item[0].device)


def check_memory(plan, bucket, layout, limit):
    """Log the plan; refuse to start when it exceeds `limit` (env.max_device_memory), naming what to change."""
    _logger.info("memory plan per device (largest bucket %s, layout %s):\n%s", bucket, layout, "\n".join(plan.lines()))
    if limit is None:
        return
    allowed = parse_memory_size(limit)
    if plan.device <= allowed:
        return
    parts = {"activations": plan.activations + plan.weight_copies, "optimizer": plan.optimizer + plan.ema,
             "weights": plan.weights + plan.gradients + plan.accumulation}
    advice = {"activations": "set model.recompute_every 1, a larger parallel.cp or a smaller dataloader.batch_size",
              "optimizer": "raise train.settings.zero_stage (>= 1 shards it over data-parallel ranks)",
              "weights": "raise parallel.tp or set train.settings.zero_stage 3"}[max(parts, key=parts.get)]
    raise MemoryError(f"the memory plan needs {format_bytes(plan.device)} per device, more than env.max_device_memory "
                      f"= {limit}: {advice}. The plan:\n" + "\n".join(plan.lines()))


def validation_batches(cfg, inputs):
    """Fixed held-out batches (latents sampled once with the validation seed, no text dropout)."""
    if not cfg.valid.csv_path:
        return None
    settings = dataset_settings(cfg, csv_path=cfg.valid.csv_path, text_drop_prob=0.0, reference_drop_prob=0.0)
    loader = VideoDataLoader(VideoDataset(**settings), seed=cfg.valid.seed, num_workers=0)
    rng = np.random.default_rng(cfg.valid.seed)
    batches = []
    for batch, _ in zip(loader, range(cfg.valid.max_batches)):
        x1, embs, masks = inputs(batch, rng)
        batches.append((x1.asnumpy(), (embs, masks)))
    return batches


def main(argv=None):
    parser = build_parser()
    cfg, built = parse(parser, argv)
    env, settings, layout = built.env, built.train, built.parallel
    ignored = set_up_environment(env)
    groups = init_parallel(layout.dp, layout.tp, layout.cp) if env.distributed else None
    with RunDirectory(settings, writes=groups is None or groups.rank == 0) as run:
        run.write_config(parser.dump(cfg))
        for option in ignored:
            _logger.info("on %s, ignored: %s", ms.get_context("device_target"), option)
        dataset = VideoDataset(**dataset_settings(cfg))
        tae = load_tae(cfg.tae.path) if not dataset.latent_mode or built.pixel_loss.weight > 0 else None
        inputs = build_inputs(cfg, dataset, tae)
        groups_layout = Layout(groups.dp, groups.tp, groups.cp, layout.sp, settings.settings.zero_stage) \
            if groups is not None else Layout()
        if groups is None or groups.rank == 0:
            check_memory(*memory_plan(cfg, built, groups_layout, dataset), groups_layout, env.max_device_memory)
            if built.pixel_loss.weight > 0:
                _logger.warning(PIXEL_LOSS_UNPLANNED)
        model = build_model(cfg, env.seed, groups, layout.sp, settings.settings.zero_stage)
        opt, clip = settings.optimizer, settings.settings.clip_grad_norm
        if groups is not None:
            # ParallelAdamW reduces gradients over the layout and clips by the global norm itself.
            optimizer = ParallelAdamW(model, lr=opt.lr, weight_decay=opt.weight_decay, betas=tuple(opt.betas),
                                      eps=opt.eps, clip_grad_norm=clip)
            clip, dp_rank, dp_size = 0.0, groups.dp_rank, groups.dp
        else:
            optimizer = build_adamw(model.trainable_params(), lr=opt.lr, weight_decay=opt.weight_decay,
                                    betas=tuple(opt.betas), eps=opt.eps)
            dp_rank, dp_size = 0, 1
        apply_recompute(model, cfg.model.recompute_every, compiled=env.mode == 0)  # last: after parallelize
        loader = VideoDataLoader(dataset, rank=dp_rank, world_size=dp_size, **cfg.dataloader.as_dict())
        held_out = validation_batches(cfg, inputs)
        step_options = dict(jit=env.mode == 0, clip_grad_norm=clip, inputs=inputs, valid_batches=held_out,
                            accumulation_steps=settings.settings.gradient_accumulation_steps,
                            valid_num_t=built.valid.num_t, valid_seed=built.valid.seed,
                            conditions=built.condition if cfg.model.condition_channels else None)
        if built.pixel_loss.weight > 0:
            step = PixelSupervisedStep(model, optimizer, built.flow, tae, built.pixel_loss, **step_options)
        else:
            step = FlowMatchingTrainStep(model, optimizer, built.flow, **step_options)
        trainer = Trainer(step=step, loader=loader, run=run, settings=settings, seed=env.seed, groups=groups,
                          validate_every=built.valid.every if held_out else 0,
                          run_config=json.loads(parser.dump(cfg, format="json")))
        return trainer.run()


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
