"""The seed's three stage scripts (../shared/seeds/000_..., "Execution Scripts") as train.py options, and tiny
cached data laid out as those scripts expect it (one CSV, a latent folder per stage, a text-embedding folder per
encoder, the encoders' real widths).

Only what a CPU test must change is changed: the data paths (under `data`), the model size (a tiny model in fp32:
MindSpore's CPU kernels have no bf16), PyNative mode, the step count, the pretrained checkpoint's path (the seed names a MindSpore .ckpt file; this project
writes its own checkpoints: the run's ckpt/ folder is given), the TAE's path and the loader's worker processes.
"""
import csv
import json

import numpy as np

from mg.data.latent_cache import latent_path, save_latent
from mg.data.text_cache import EMPTY_PROMPT, prepared_prompt, save_text_emb, text_emb_path
from mg.models.tae import tae_config

ENCODERS = {"ul2": 4096, "byt5": 1472}  # the stage configs' text encoders
TEXT_LENGTH = 8
IMAGES = ["a red square on grey", "a blue circle on grey", 'a sign reading "OPEN"', "a green triangle",
          "a yellow disc", "two red squares"]
VIDEO = "a blue circle moving left"
# (folder, [(CSV rows it caches, latent (C, T, H, W), fps)]): stage 1 images at 256 px, stage 2 those and a 64-frame
# 256x448 clip, stage 3 images at 768 px, stage 4 (the project's quality fine-tune) a 32-frame 768x768 clip that only
# the curated CSV names
LATENTS = {"tae_latent_images": [("images", (16, 1, 32, 32), 0.0)],
           "tae_latent": [("images", (16, 1, 32, 32), 0.0), ("video", (16, 8, 32, 56), 16.0)],
           "high_tae_latent": [("images", (16, 1, 96, 96), 0.0), ("curated", (16, 4, 96, 96), 16.0)]}
# Stage 4's videos are 256 frames at 768 px (73,728 tokens, minutes per step on a CPU even for the tiny model): the
# CPU test gives it a 32-frame bucket instead
STAGE4_CPU_BUCKETS = ["--dataset.buckets", "[{height: 768, width: 768, frames: 32, batch_size: 1}]"]
TINY_MODEL = ["--model.flavor", "tiny", "--model.depth", "1", "--model.dim", "32", "--model.ffn_dim", "64",
              "--model.num_heads", "2", "--model.dtype", "fp32"]


def write_stage_data(root, seed=0):
    """The seed's datasets/mixkit-100videos layout, tiny; returns its folder."""
    rng = np.random.default_rng(seed)
    data = root / "mixkit-100videos"
    rows = [(f"image_{i}.jpg", caption, "images") for i, caption in enumerate(IMAGES)] + [("clip.mp4", VIDEO, "video")]
    curated = [("curated_clip.mp4", VIDEO, "curated")]
    data.mkdir(parents=True)
    for name, listed in (("video_caption_train.csv", rows), ("video_caption_curated.csv", curated)):
        with open(data / name, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["video", "caption"])
            writer.writerows(row[:2] for row in listed)
    rows += curated
    prompts = {EMPTY_PROMPT}
    for folder, kinds in LATENTS.items():
        for kind, shape, fps in kinds:
            for video, caption, row_kind in rows:
                if row_kind != kind:
                    continue
                mean = rng.standard_normal(shape).astype(np.float32)
                save_latent(latent_path(str(data / folder), video), mean, np.full(shape, 0.1, np.float32), video, fps,
                            frames=1 if shape[1] == 1 else 8 * shape[1], height=8 * shape[2], width=8 * shape[3])
                prompts |= {(caption, fps)}
    for kind, width in ENCODERS.items():
        folder = data / f"{kind}_emb_{300 if kind == 'ul2' else 100}"
        for item in prompts:
            prompt = EMPTY_PROMPT if item == EMPTY_PROMPT else prepared_prompt(item[0], item[1] or None, kind)
            mask = (np.arange(TEXT_LENGTH) < (0 if prompt == "" and kind == "byt5" else 5)).astype(np.uint8)
            save_text_emb(text_emb_path(str(folder), prompt),
                          rng.standard_normal((TEXT_LENGTH, width)).astype(np.float32), mask, prompt, kind)
    (data / "tae.safetensors.json").write_text(json.dumps({"config": tae_config("tiny", latent_channels=16).to_dict()}))
    return data


def _data_options(data, latents):
    return ["--dataset.csv_path", f"{data}/video_caption_train.csv", "--dataset.video_folder", f"{data}/mixkit",
            "--dataset.tae_latent_folder", f"{data}/{latents}",
            "--dataset.text_emb_folder.ul2", f"{data}/ul2_emb_300", "--dataset.text_emb_folder.byt5", f"{data}/byt5_emb_100"]


def seed_stage_options(stage, data, output, previous=None, steps=2):
    """train.py arguments of the seed's stage script `stage` (1, 2, 3), with the test's changes (module docstring)."""
    env = ["--env.mode", "0", "--env.jit_level", "O1", "--env.max_device_memory", "59GB", "--env.distributed", "True"]
    if stage == 1:
        options = ["--config", "configs/train/stage1_t2i_256px.yaml", *env, "--train.settings.zero_stage", "2",
                   *_data_options(data, "tae_latent_images"), "--dataloader.batch_size", "10",
                   "--valid.dataset", "", "--train.ema", "", "--train.optimizer.weight_decay", "0",
                   "--train.save.ckpt_save_policy", "latest_k", "--train.steps", "2000", "--train.output_path", output]
    else:
        config = "configs/train/stage2_t2iv_256px.yaml" if stage == 2 else "configs/train/stage3_t2iv_768px.yaml"
        options = ["--config", config, *env, "--model.pretrained_model_path", f"{previous}/ckpt",
                   "--train.settings.zero_stage", "2",
                   *_data_options(data, "tae_latent" if stage == 2 else "high_tae_latent"),
                   "--dataloader.batch_size.image_batch_size", "1", "--dataloader.batch_size.video_batch_size", "1",
                   "--train.ema", "", *(["--train.lr_scheduler.lr", "0.0001"] if stage == 2 else []),
                   "--train.optimizer.weight_decay", "0", "--train.settings.gradient_accumulation_steps", "5",
                   "--train.steps", "40000" if stage == 2 else "30000", "--train.output_path", output]
    return options + cpu_changes(data, steps)


def cpu_changes(data, steps=2):
    """What a CPU test changes of a stage run (module docstring), given after its options."""
    return ["--env.mode", "1", "--train.steps", str(steps), "--tae.path", f"{data}/tae.safetensors",
            "--dataloader.num_workers", "0", *TINY_MODEL]
