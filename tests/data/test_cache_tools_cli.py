"""The two caching tools run as commands with the real tiny TAE and text encoders, then read by the dataset."""
import json
import subprocess
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

from mg.data import VideoDataLoader, VideoDataset
from mg.data.latent_cache import latent_path, load_latent
from mg.models.tae import TemporalAutoencoder, load_tae, save_tae, tae_config
from mg.models.text_encoders import build_text_encoder, prepare_prompt
from mg.models.text_encoders.tiny import write_tiny_text_encoder

TOOLS = Path(__file__).resolve().parents[2] / "tools"
BUCKETS = [{"height": 16, "width": 16, "frames": 1, "batch_size": 2},
           {"height": 16, "width": 24, "frames": 8, "batch_size": 1}]
MAX_LENGTHS = {"metaclip": 24, "byt5": 16}  # metaclip has the FPS prefix; its tiny tokenizer is quick to write


def run_tool(name, *args):
    done = subprocess.run([sys.executable, str(TOOLS / name), *args], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


@pytest.mark.slow  # two tool processes and three tiny-TAE encodes: ~25 s of CPU
def test_tools_then_dataset_with_real_tiny_models(media, write_csv, tmp_path):
    csv_path = write_csv([[media.landscape, 'a wide clip with "HELLO"'], [media.image_png, "a picture"],
                          [media.image_jpg, "another picture"]])
    ms.set_seed(0)
    save_tae(TemporalAutoencoder(tae_config("tiny")), tmp_path / "tae.safetensors")
    paths = {kind: str(write_tiny_text_encoder(kind, tmp_path / kind)) for kind in MAX_LENGTHS}
    folders = {kind: str(tmp_path / f"{kind}_emb") for kind in MAX_LENGTHS}
    common = ["--csv_path", csv_path, "--video_folder", media.folder, "--target_fps", "10"]

    log = run_tool("cache_tae_latents.py", *common, "--output_folder", str(tmp_path / "latents"),
                   "--buckets", json.dumps(BUCKETS), "--tae_checkpoint", str(tmp_path / "tae.safetensors"))
    assert "'written': 3" in log
    run_tool("cache_text_embeddings.py", *common, "--output_folders", json.dumps(folders),
             "--encoder_paths", json.dumps(paths), "--max_lengths", json.dumps(MAX_LENGTHS))

    # The cached posterior is what the TAE gives for the clip the pixel-mode dataset yields.
    tae = load_tae(tmp_path / "tae.safetensors")
    pixels = VideoDataset(csv_path, BUCKETS, video_folder=media.folder, target_fps=10, random_clip_start=False)
    video = pixels.load_sample(0, np.random.default_rng(0))["video"]
    mean, logvar = tae.encode(ms.Tensor(video[None]), tiled=True)
    cached_mean, cached_std = load_latent(latent_path(str(tmp_path / "latents"), media.landscape))
    np.testing.assert_allclose(cached_mean, mean.asnumpy()[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cached_std, np.exp(0.5 * logvar.asnumpy()[0]), rtol=1e-5, atol=1e-6)

    dataset = VideoDataset(csv_path, BUCKETS, tae_latent_folder=str(tmp_path / "latents"), text_emb_folders=folders)
    batches = list(VideoDataLoader(dataset, seed=0, num_workers=0))
    video_batch = next(b for b in batches if b["fps"][0] == 10)
    assert video_batch["latent"].shape == (1, 16, 1, 2, 3)
    for kind in MAX_LENGTHS:
        encoder = build_text_encoder(kind, paths[kind], MAX_LENGTHS[kind])
        emb, mask = encoder.encode([prepare_prompt('a wide clip with "HELLO"', 10.0, kind)])
        np.testing.assert_allclose(video_batch[f"{kind}_emb"], emb, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(video_batch[f"{kind}_mask"], mask)
    image_batch = next(b for b in batches if b["fps"][0] == 0)
    assert image_batch["latent"].shape == (2, 16, 1, 2, 2)
