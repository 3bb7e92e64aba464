"""tools/tae_encode_decode.py: a real mp4 written here goes to latent files and back to an mp4 of the same shape."""
import subprocess
import sys
from pathlib import Path

import cv2
import mindspore as ms
import numpy as np
import pytest

from mg.data.latent_cache import load_latent, read_latent_header
from mg.data.video_io import probe, read_frames
from mg.models.tae import TemporalAutoencoder, save_tae, tae_config
from mg.models.tae.media import to_uint8_frames

TOOL = Path(__file__).resolve().parents[2] / "tools" / "tae_encode_decode.py"


def _write_mp4(path, frames=17, height=24, width=32, fps=12):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for t in range(frames):
        frame = np.full((height, width, 3), 40, np.uint8)
        frame[4:12, 2 + t:10 + t] = (200, 80, 30)
        writer.write(frame)
    writer.release()


def _run(*args):
    result = subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_encode_decode_round_trip_of_a_real_mp4(tmp_path):
    video = tmp_path / "clip.mp4"
    _write_mp4(video)
    tae = TemporalAutoencoder(tae_config("tiny"))
    save_tae(tae, tmp_path / "tae.safetensors")
    _run("encode", "--tae_checkpoint", str(tmp_path / "tae.safetensors"), "--inputs", f"[{video}]",
         "--output_folder", str(tmp_path / "latents"))
    latent_file = tmp_path / "latents" / "clip.mp4.safetensors"
    shape, meta = read_latent_header(str(latent_file))
    assert shape == (16, 3, 3, 4)
    assert (meta["frames"], meta["height"], meta["width"], float(meta["fps"])) == ("17", "24", "32", 12.0)
    mean, std = load_latent(str(latent_file))
    frames = read_frames(str(video), np.arange(17))
    want_mean, want_logvar = tae.encode(ms.Tensor((frames.transpose(3, 0, 1, 2)[None] / 127.5 - 1).astype(np.float32)))
    np.testing.assert_allclose(mean, want_mean.asnumpy()[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(std, np.exp(0.5 * want_logvar.asnumpy()[0]), rtol=1e-4, atol=1e-5)

    _run("decode", "--tae_checkpoint", str(tmp_path / "tae.safetensors"), "--inputs", f"[{latent_file}]",
         "--output_folder", str(tmp_path / "decoded"))
    decoded = tmp_path / "decoded" / "clip.mp4"
    info = probe(str(decoded))
    assert (info.num_frames, info.height, info.width, info.fps) == (17, 24, 32, 12.0)
    want = to_uint8_frames(tae.decode(ms.Tensor(mean[None]), 17).asnumpy()[0]).astype(np.float32)
    got = read_frames(str(decoded), np.arange(17)).astype(np.float32)
    # an untrained decoder gives noisy frames that mp4v compresses lossily: compare what the codec keeps
    np.testing.assert_allclose(got.mean(axis=(1, 2)), want.mean(axis=(1, 2)), atol=6.0)
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.8
    # nothing is silently overwritten
    result = subprocess.run([sys.executable, str(TOOL), "decode", "--tae_checkpoint", str(tmp_path / "tae.safetensors"),
                             "--inputs", f"[{latent_file}]", "--output_folder", str(tmp_path / "decoded")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "exists" in result.stderr
