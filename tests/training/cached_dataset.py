"""A tiny cached dataset on disk (latents, text embeddings for two encoders, a TAE config) for train.py tests."""
import csv
import json

import numpy as np

from mg.data.latent_cache import latent_path, save_latent
from mg.data.text_cache import EMPTY_PROMPT, prepared_prompt, save_text_emb, text_emb_path
from mg.models.tae import tae_config

ENCODERS = {"ul2": 12, "byt5": 8}
CAPTIONS = ["a red square moves left", "a blue circle moves up", 'a sign reading "OPEN"', "a green dot"]


def write_cached_dataset(root, rows=8, latent_shape=(4, 1, 4, 4), fps=8.0, seed=0):
    """Writes root/{train,valid}.csv, latents/, text/<kind>/ and tae.safetensors.json; returns config overrides."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    latents, text = root / "latents", root / "text"
    for split, n in (("train", rows), ("valid", 2)):
        with open(root / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["video", "caption"])
            for i in range(n):
                video, caption = f"{split}_{i}.mp4", CAPTIONS[i % len(CAPTIONS)]
                writer.writerow([video, caption])
                mean = rng.standard_normal(latent_shape).astype(np.float32)
                save_latent(latent_path(str(latents), video), mean, np.full(latent_shape, 0.1, np.float32), video,
                            fps, frames=8 * latent_shape[1], height=8 * latent_shape[2], width=8 * latent_shape[3])
                for kind, dim in ENCODERS.items():
                    write_embedding(text / kind, prepared_prompt(caption, fps, kind), kind, dim, rng)
    for kind, dim in ENCODERS.items():
        write_embedding(text / kind, EMPTY_PROMPT, kind, dim, rng)
    tae_json = root / "tae.safetensors.json"
    tae_json.write_text(json.dumps({"config": tae_config("tiny", latent_channels=latent_shape[0],
                                                         scaling_factor=0.5, shift_factor=0.1).to_dict()}))
    frames, height, width = 8 * latent_shape[1], 8 * latent_shape[2], 8 * latent_shape[3]
    return {"csv": root / "train.csv", "valid_csv": root / "valid.csv", "latents": latents,
            "text": {kind: str(text / kind) for kind in ENCODERS}, "tae": root / "tae.safetensors",
            "bucket": {"height": height, "width": width, "frames": frames, "batch_size": 2}}


def write_embedding(folder, prompt, kind, dim, rng, length=6):
    valid = 0 if prompt == "" and kind == "byt5" else int(rng.integers(1, length + 1))
    mask = (np.arange(length) < valid).astype(np.uint8)
    save_text_emb(text_emb_path(str(folder), prompt), rng.standard_normal((length, dim)).astype(np.float32), mask,
                  prompt, kind)


def train_args(data, output, steps, extra=()):
    """Command-line arguments of a tiny train.py run on the cached dataset."""
    return [
        "--model.depth", "1", "--model.dim", "32", "--model.ffn_dim", "48", "--model.num_heads", "2",
        "--model.in_channels", "4", "--model.max_t", "1", "--model.max_h", "2", "--model.max_w", "2",
        "--model.text_encoders", json.dumps(ENCODERS),
        "--tae.path", str(data["tae"]),
        "--dataset.csv_path", str(data["csv"]), "--dataset.tae_latent_folder", str(data["latents"]),
        "--dataset.text_emb_folders", json.dumps(data["text"]),
        "--dataset.buckets", json.dumps([data["bucket"]]), "--dataset.text_drop_prob", "0.2",
        "--dataloader.num_workers", "0", "--dataloader.seed", "3",
        "--train.output_path", str(output), "--train.steps", str(steps),
        "--train.optimizer.lr", "1e-3", "--train.lr_scheduler.warmup_steps", "2",
        "--train.save.every", "2", "--train.log.every", "1", "--train.log.plot_every", "2",
        "--valid.csv_path", str(data["valid_csv"]), "--valid.every", "2", "--valid.num_t", "2",
        "--env.seed", "7", *extra,
    ]
