"""Train the Movie Gen transformer with flow matching.

    python train.py --config configs/train/stage1_t2i_256px.yaml --train.steps 100 --train.output_path out/

Every YAML section is bound to the signature of what it builds (model: DiTConfig, dataset: VideoDataset,
dataloader: VideoDataLoader, flow: FlowMatching, train / valid: the settings in mg.training.trainer); unknown keys
and wrong types fail before anything runs, naming the key. The resolved config is saved to the output directory.
"""
import mg  # noqa: F401  (quiet MindSpore logging before it is imported)

import logging
import sys
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

import mindspore as ms
import numpy as np
from jsonargparse import ActionConfigFile, ArgumentParser

from mg.backends import apply_recompute
from mg.data import VideoDataLoader, VideoDataset
from mg.io import load_checkpoint
from mg.models.dit import DiTConfig, MovieGenDiT, load_dit_weights
from mg.models.dit.io import select_weights
from mg.models.tae.io import load_tae, load_tae_config
from mg.models.text_encoders import build_text_encoder
from mg.parallel import ParallelAdamW, ParallelConfig, init_parallel, parallelize
from mg.schedulers import FlowMatching
from mg.training.ema import EMA
from mg.training.inputs import ModelInputs
from mg.training.lr_policy import PlateauLR
from mg.optim import build_adamw
from mg.training.state_io import LocalState, ParallelState
from mg.training.train_step import FlowMatchingTrainStep
from mg.training.trainer import Trainer, TrainSettings, ValidSettings


@dataclass
class EnvSettings:
    """mode: 0 = graph (the train step is compiled with ms.jit), 1 = PyNative. device_target: None keeps MindSpore's
    default. distributed: run under msrun with the `parallel` layout. jit_level and max_device_memory: Ascend only."""
    mode: int = 0
    seed: int = 42
    device_target: Optional[str] = None
    distributed: bool = False
    jit_level: str = "O1"
    max_device_memory: Optional[str] = None


@dataclass
class TAESettings:
    """path: the TAE checkpoint; its config gives the latent scale/shift, its weights encode pixel batches."""
    path: str
    tiled: bool = True


@dataclass
class TextEncoderSpec:
    path: str
    max_length: int


def build_parser():
    parser = ArgumentParser(description=__doc__.split("\n\n")[0], default_meta=False)
    parser.add_argument("--config", action=ActionConfigFile, help="YAML config file")
    parser.add_dataclass_arguments(EnvSettings, "env")
    parser.add_dataclass_arguments(DiTConfig, "model")
    parser.add_argument("--model.pretrained_model_path", type=Optional[str], default=None,
                        help="checkpoint of the previous stage (positional tables are expanded to this model's)")
    parser.add_argument("--model.recompute_every", type=int, default=0,
                        help="recompute the activations of every n-th block in the backward pass (0: none; compiled "
                             "on CPU only 1 works)")
    parser.add_dataclass_arguments(TAESettings, "tae")
    parser.add_argument("--text_encoders", type=Optional[Dict[str, TextEncoderSpec]], default=None,
                        help="encoders run on the fly ({kind: {path, max_length}}); null when embeddings are cached")
    parser.add_class_arguments(VideoDataset, "dataset")
    parser.add_class_arguments(VideoDataLoader, "dataloader", skip={"dataset", "rank", "world_size"})
    parser.add_class_arguments(FlowMatching, "flow")
    parser.add_dataclass_arguments(TrainSettings, "train")
    parser.add_dataclass_arguments(ValidSettings, "valid")
    parser.add_dataclass_arguments(ParallelConfig, "parallel")
    return parser


def set_up_environment(env):
    if env.device_target:
        ms.set_device(env.device_target)
    ms.set_context(mode=ms.PYNATIVE_MODE)  # graph mode comes from ms.jit on the train step (env.mode 0)
    if ms.get_context("device_target") == "Ascend":
        ms.set_context(jit_config={"jit_level": env.jit_level})
        if env.max_device_memory:
            ms.set_context(max_device_memory=env.max_device_memory)
    ms.set_seed(env.seed)


def build_model(cfg):
    fields = {k: v for k, v in cfg.model.as_dict().items() if k not in ("pretrained_model_path", "recompute_every")}
    model = MovieGenDiT(DiTConfig(**fields))
    if cfg.model.pretrained_model_path:
        tensors, _ = load_checkpoint(cfg.model.pretrained_model_path)
        source = cfg.model.pretrained_model_path
        load_dit_weights(model, select_weights(tensors, source=source), source=source)
    return model


def build_inputs(cfg, model, dataset):
    tae = None if dataset.latent_mode else load_tae(cfg.tae.path)
    encoders = {kind: build_text_encoder(kind, spec.path, spec.max_length)
                for kind, spec in (cfg.text_encoders or {}).items()}
    return ModelInputs(model.config.text_encoders, load_tae_config(cfg.tae.path), tae, encoders, cfg.tae.tiled)


def validation_batches(cfg, inputs):
    """Fixed held-out batches (latents sampled once with the validation seed, no text dropout)."""
    if not cfg.valid.csv_path:
        return None
    settings = {**cfg.dataset.as_dict(), "csv_path": cfg.valid.csv_path, "text_drop_prob": 0.0}
    loader = VideoDataLoader(VideoDataset(**settings), seed=cfg.valid.seed, num_workers=0)
    rng = np.random.default_rng(cfg.valid.seed)
    batches = []
    for batch, _ in zip(loader, range(cfg.valid.max_batches)):
        x1, embs, masks = inputs(batch, rng)
        batches.append((x1.asnumpy(), (embs, masks)))
    return batches


def prepare_output(parser, cfg):
    """Refuse to reuse another run's directory; save the resolved config; log to train.log (writing rank only)."""
    output = Path(cfg.train.output_path)
    if not cfg.train.resume and (output / "config.yaml").exists():
        raise FileExistsError(f"{output} already holds a run (config.yaml); pass --train.resume latest to continue "
                              "it, or choose another --train.output_path")
    output.mkdir(parents=True, exist_ok=True)
    name = "config.yaml" if not cfg.train.resume else "config_resumed.yaml"
    parser.save(cfg, output / name, overwrite=bool(cfg.train.resume), multifile=False)
    handler = logging.FileHandler(output / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)


def main(argv=None):
    parser = build_parser()
    cfg = parser.parse_args(argv)
    set_up_environment(cfg.env)
    layout = ParallelConfig(**cfg.parallel.as_dict())
    groups = init_parallel(layout.dp, layout.tp, layout.cp) if cfg.env.distributed else None
    if groups is None or groups.rank == 0:
        prepare_output(parser, cfg)

    model = build_model(cfg)
    settings, opt = cfg.train, cfg.train.optimizer
    if groups is not None:
        parallelize(model, groups, sp=layout.sp, zero_stage=settings.settings.zero_stage)
        # ParallelAdamW reduces gradients over the layout and clips by the global norm itself.
        optimizer = ParallelAdamW(model, lr=opt.lr, weight_decay=opt.weight_decay, betas=tuple(opt.betas),
                                  eps=opt.eps, clip_grad_norm=settings.settings.clip_grad_norm)
        clip, dp_rank, dp_size = 0.0, groups.dp_rank, groups.dp
    else:
        if settings.settings.zero_stage:
            raise ValueError("train.settings.zero_stage > 0 shards over data-parallel ranks: it needs "
                             "--env.distributed True under msrun (or set it to 0)")
        optimizer = build_adamw(model.trainable_params(), lr=opt.lr, weight_decay=opt.weight_decay,
                                betas=tuple(opt.betas), eps=opt.eps)
        clip, dp_rank, dp_size = settings.settings.clip_grad_norm, 0, 1
    apply_recompute(model, cfg.model.recompute_every, compiled=cfg.env.mode == 0)  # last: after parallelize
    flow = FlowMatching(**cfg.flow.as_dict())
    dataset = VideoDataset(**cfg.dataset.as_dict())
    loader = VideoDataLoader(dataset, rank=dp_rank, world_size=dp_size, **cfg.dataloader.as_dict())
    inputs = build_inputs(cfg, model, dataset)
    step = FlowMatchingTrainStep(model, optimizer, flow, jit=cfg.env.mode == 0, clip_grad_norm=clip,
                                 accumulation_steps=settings.settings.gradient_accumulation_steps)
    ema = EMA(model.trainable_params(), settings.ema.decay, settings.ema.warmup) if settings.ema else None
    state = LocalState(model, optimizer, ema) if groups is None else ParallelState(model, optimizer, ema, groups)
    lr_policy = PlateauLR(opt.lr, **settings.lr_scheduler.as_dict())
    trainer = Trainer(model=model, train_step=step, optimizer=optimizer, lr_policy=lr_policy, ema=ema, loader=loader,
                      inputs=inputs, flow=flow, settings=settings, seed=cfg.env.seed, dp_rank=dp_rank, state=state,
                      validation_batches=validation_batches(cfg, inputs), valid=cfg.valid,
                      run_config=json.loads(parser.dump(cfg, format="json")))
    return trainer.run()


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
