"""Benchmark: train a small TAE on CPU on synthetic moving-shape videos, report held-out reconstruction PSNR/SSIM.

    python tools/benchmark_tae_psnr.py --steps 1500 --output_dir runs/tae_psnr

Training mixes 1 image batch (T=1) per `image_every - 1` video batches, AdamW, ms.jit steps. Evaluation encodes the
held-out videos (a different seed) to the posterior mean, decodes, and compares in [0, 1].
"""
import json
import time
from pathlib import Path

import mg  # noqa: F401  (quiet logging before mindspore loads)
import mindspore as ms
import numpy as np
from jsonargparse import CLI
from tqdm import tqdm

from mg.models.tae import TemporalAutoencoder, save_tae, tae_config
from mg.models.tae.losses import TAELoss, TAELossConfig
from mg.models.tae.metrics import psnr, ssim
from mg.models.tae.synthetic import moving_shapes
from mg.models.tae.trainer import TAETrainStep
from mg.training.optim import build_adamw, set_lr
from mg.training.train_log import TrainingLog


def evaluate(tae, videos, batch=4):
    """(PSNR, SSIM) of reconstructions (posterior mean) of `videos` (N, 3, T, H, W) in [-1, 1]."""
    recons = []
    for i in range(0, len(videos), batch):
        x = ms.Tensor(videos[i:i + batch])
        mean, _ = tae.encode(x)
        recons.append(tae.decode(mean, x.shape[2]).asnumpy())
    ref, rec = (videos + 1) / 2, np.clip((np.concatenate(recons) + 1) / 2, 0, 1)
    return psnr(rec, ref), ssim(rec, ref)


def main(output_dir: str = "runs/tae_psnr", preset: str = "small", base_channels: int = 32,
         channel_multipliers: tuple = (1, 2, 4, 4), num_res_blocks: int = 1, frames: int = 8, size: int = 32,
         batch_size: int = 4, image_every: int = 4, steps: int = 1500, lr: float = 1e-3, min_lr: float = 1e-4,
         warmup: int = 50, kl_weight: float = 1e-6, eval_videos: int = 16, seed: int = 0, jit: bool = True,
         max_minutes: float = 0.0):
    """Train and evaluate; prints the figures and writes log, loss curve, checkpoint and results.json to output_dir.

    Args:
        output_dir: run folder (must not hold a previous result).
        preset: TAE preset the overrides apply to.
        base_channels: TAE base width.
        channel_multipliers: width multipliers per level (4 levels = 8x compression).
        num_res_blocks: ResNet blocks per level.
        frames: frames per training/eval video.
        size: height = width of the videos.
        batch_size: videos (or images) per batch.
        image_every: every n-th batch is an image batch (0 = videos only).
        steps: optimisation steps.
        lr: peak learning rate (cosine decay to min_lr after a linear warm-up).
        min_lr: final learning rate.
        warmup: warm-up steps.
        kl_weight: weight of the KL term.
        eval_videos: held-out videos.
        seed: seed of weights and training data (eval data uses seed + 1).
        jit: compile the training step.
        max_minutes: stop training after this long (0 = no limit); the learning-rate schedule follows whichever of
            steps and time is further along.
    """
    out = Path(output_dir)
    if (out / "results.json").exists():
        raise FileExistsError(f"{out}/results.json exists; choose another --output_dir")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_seed(seed)
    cfg = tae_config(preset, base_channels=base_channels, channel_multipliers=tuple(channel_multipliers),
                     num_res_blocks=num_res_blocks)
    tae = TemporalAutoencoder(cfg)
    n_params = sum(p.size for p in tae.get_parameters())
    loss = TAELoss(TAELossConfig(kl_weight=kl_weight))
    optimizer = build_adamw(tae.trainable_params(), lr=lr, weight_decay=0.0)
    train_step = TAETrainStep(tae, loss, optimizer, jit=jit)
    log = TrainingLog(out, plot_every=100)
    rng = np.random.default_rng(seed)
    held_out = moving_shapes(np.random.default_rng(seed + 1), eval_videos, frames, size, size)
    print(f"TAE {cfg.base_channels}x{cfg.channel_multipliers}, {cfg.num_res_blocks} res blocks: {n_params / 1e6:.2f} M "
          f"params; {frames}x{size}x{size} videos, batch {batch_size}, {steps} steps")
    start = time.time()
    progress = tqdm(range(steps), desc="train TAE", unit="step")
    for step in progress:
        elapsed = (time.time() - start) / 60
        if max_minutes and elapsed > max_minutes:
            break
        done = max(step / steps, elapsed / max_minutes if max_minutes else 0.0)
        scale = min(1.0, (step + 1) / warmup) * (min_lr + (lr - min_lr) * 0.5 * (1 + np.cos(np.pi * done))) / lr
        set_lr(optimizer, lr * scale)
        is_image = image_every and step % image_every == image_every - 1
        x = moving_shapes(rng, batch_size, 1 if is_image else frames, size, size)
        scalars = train_step(ms.Tensor(x), step)
        log.log(step, **scalars, lr=lr * scale)
        progress.set_postfix(loss=f"{scalars['loss']:.4f}")
    train_time = time.time() - start
    log.plot()
    tae.set_train(False)
    video_psnr, video_ssim = evaluate(tae, held_out)
    image_psnr, image_ssim = evaluate(tae, held_out[:, :, :1])
    results = {"params_M": n_params / 1e6, "steps": step + 1, "train_seconds": train_time,
               "video_psnr": video_psnr, "video_ssim": video_ssim, "image_psnr": image_psnr, "image_ssim": image_ssim,
               "config": cfg.to_dict(), "frames": frames, "size": size, "batch_size": batch_size}
    save_tae(tae, out / "tae.safetensors", overwrite=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"held-out videos: PSNR {video_psnr:.2f} dB, SSIM {video_ssim:.4f}; first frames as images: PSNR "
          f"{image_psnr:.2f} dB, SSIM {image_ssim:.4f}; training {train_time / 60:.1f} min")


if __name__ == "__main__":
    CLI(main)
