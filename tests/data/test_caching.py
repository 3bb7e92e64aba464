"""CSV -> caching jobs -> latent-mode dataset -> batch, with stand-in TAE and text encoders of the real interfaces."""
import glob
import logging
import os

import mindspore as ms
import numpy as np
import pytest

from mg.data import Bucket, VideoDataLoader, VideoDataset
from mg.data.caching import cache_tae_latents, cache_text_embeddings
from mg.data.latent_cache import latent_path, load_latent, read_latent_header
from mg.models.text_encoders import prepare_prompt

BUCKETS = [Bucket(16, 16, 1, 2), Bucket(16, 24, 8, 2), Bucket(24, 16, 8, 1)]
KINDS = ("ul2", "byt5")
LENGTH, WIDTH = 12, 3
STD = 0.5


class PoolingTAE:
    """Stand-in TAE: mean = 8x8x8 average pooling (channel c pools RGB channel c % 3), std = STD everywhere."""

    def __init__(self):
        self.calls = 0

    def set_train(self, mode):
        assert mode is False

    def encode(self, x, tiled=True):
        self.calls += 1
        return tuple(ms.Tensor(a) for a in pool_moments(x.asnumpy()))


def pool_moments(x):
    b, _, t, h, w = x.shape
    frames = [x[:, :, s:s + 8].mean(axis=2) for s in range(0, t, 8)]
    pooled = np.stack(frames, axis=2).reshape(b, 3, -1, h // 8, 8, w // 8, 8).mean(axis=(4, 6))
    mean = pooled[:, np.arange(16) % 3].astype(np.float32)
    return mean, np.full_like(mean, 2 * np.log(STD))


def fake_embedding(prompt):
    """(emb (LENGTH, WIDTH), mask (LENGTH,)): the first bytes of the prompt scaled per channel, mask over them."""
    codes = np.frombuffer(prompt.encode("utf-8")[:LENGTH], dtype=np.uint8).astype(np.float32)
    emb = np.zeros((LENGTH, WIDTH), np.float32)
    emb[: len(codes)] = codes[:, None] * np.arange(1, WIDTH + 1) / 255
    mask = (np.arange(LENGTH) < len(codes)).astype(np.uint8)
    return emb, mask


class FakeEncoder:
    def __init__(self):
        self.prompts = []

    def encode(self, prompts):
        self.prompts += prompts
        pairs = [fake_embedding(p) for p in prompts]
        return np.stack([e for e, _ in pairs]), np.stack([m for _, m in pairs])


@pytest.fixture
def csv_path(media, write_csv):
    return write_csv([[media.landscape, "a wide clip"],
                      [media.portrait, 'a sign saying "OPEN"'],
                      [media.image_png, "a square picture"],
                      [media.image_jpg, "a grey picture"],
                      [media.landscape, "the wide clip again"],
                      [media.corrupt, "broken"]])


def run_caches(csv_path, media, root, rank=None, world_size=None, tae=None, encoders=None):
    tae = tae or PoolingTAE()
    encoders = encoders or {kind: FakeEncoder() for kind in KINDS}
    latents = cache_tae_latents(csv_path, f"{root}/latents", BUCKETS, lambda: tae, video_folder=media.folder,
                                target_fps=10, batch_size=2, rank=rank, world_size=world_size)
    texts = cache_text_embeddings(csv_path, {k: f"{root}/{k}" for k in KINDS}, encoders.__getitem__,
                                  video_folder=media.folder, target_fps=10, batch_size=3, rank=rank,
                                  world_size=world_size)
    return latents, texts


def test_csv_to_caches_to_batches(csv_path, media, tmp_path):
    tae = PoolingTAE()
    latents, texts = run_caches(csv_path, media, tmp_path, tae=tae)
    assert latents == {"written": 4, "skipped": 0, "failed": 0}  # landscape once, corrupt skipped at probe
    assert tae.calls == 3  # one call per bucket: both images, the landscape, the portrait
    # ul2: 6 captions with their FPS prefix (images none; with target_fps no video is probed, so the corrupt one's
    # caption is encoded too) + ""; byt5: "OPEN" + ""
    assert texts == {"ul2": {"written": 7, "skipped": 0}, "byt5": {"written": 2, "skipped": 0}}

    shape, metadata = read_latent_header(latent_path(f"{tmp_path}/latents", media.landscape))
    assert shape == (16, 1, 2, 3) and metadata["fps"] == "10.0" and metadata["frames"] == "8"

    # The cached mean is the pooling of exactly the clip the pixel-mode dataset yields (middle clip, same crop).
    pixels = VideoDataset(csv_path, BUCKETS, video_folder=media.folder, target_fps=10, random_clip_start=False)
    index = [s.row.video for s in pixels.samples].index(media.portrait)
    video = pixels.load_sample(index, np.random.default_rng(0))["video"]
    mean, std = load_latent(latent_path(f"{tmp_path}/latents", media.portrait))
    np.testing.assert_allclose(mean, pool_moments(video[None])[0][0], atol=1e-6)
    np.testing.assert_allclose(std, STD, rtol=1e-6)

    dataset = VideoDataset(csv_path, BUCKETS, tae_latent_folder=f"{tmp_path}/latents",
                           text_emb_folders={k: f"{tmp_path}/{k}" for k in KINDS})
    assert len(dataset) == 5  # both landscape rows share one latent; the corrupt row has none
    captions = {s.row.video: [] for s in dataset.samples}
    batches = list(VideoDataLoader(dataset, seed=0, num_workers=0))
    assert len(batches) == 3  # both images, both landscape rows, the portrait
    deviations = []
    for batch in batches:
        assert set(batch) == {"latent", "fps", "ul2_emb", "ul2_mask", "byt5_emb", "byt5_mask"}
        assert batch["ul2_emb"].shape[1:] == (LENGTH, WIDTH) and batch["ul2_mask"].dtype == np.uint8
        for i, fps in enumerate(batch["fps"]):
            # identify the sample by its ul2 embedding and check both encoders got the prompt the dataset needs
            matches = [s for s in dataset.samples
                       if np.array_equal(fake_embedding(prepare_prompt(s.row.caption, float(fps) or None, "ul2"))[0],
                                         batch["ul2_emb"][i])]
            assert len(matches) == 1
            sample = matches[0]
            captions[sample.row.video].append(sample.row.caption)
            byt5 = fake_embedding(prepare_prompt(sample.row.caption, None, "byt5"))
            np.testing.assert_array_equal(batch["byt5_emb"][i], byt5[0])
            np.testing.assert_array_equal(batch["byt5_mask"][i], byt5[1])
            mean, _ = load_latent(latent_path(f"{tmp_path}/latents", sample.row.video))
            assert batch["latent"][i].shape == mean.shape
            deviations.append(((batch["latent"][i] - mean) / STD).ravel())
    assert sorted(captions[media.landscape]) == ["a wide clip", "the wide clip again"]
    eps = np.concatenate(deviations)  # z = mean + std * eps with eps ~ N(0, 1)
    assert abs(eps.mean()) < 0.15 and abs(eps.std() - 1) < 0.1


def test_rerun_skips_everything_and_never_builds_a_model(csv_path, media, tmp_path):
    run_caches(csv_path, media, tmp_path)
    before = {p: os.path.getmtime(p) for p in glob.glob(f"{tmp_path}/**/*.safetensors", recursive=True)}

    def refuse(*_):
        raise AssertionError("nothing is left to encode, no model should be built")

    latents = cache_tae_latents(csv_path, f"{tmp_path}/latents", BUCKETS, refuse, video_folder=media.folder,
                                target_fps=10)
    texts = cache_text_embeddings(csv_path, {k: f"{tmp_path}/{k}" for k in KINDS}, refuse,
                                  video_folder=media.folder, target_fps=10)
    assert latents == {"written": 0, "skipped": 4, "failed": 0}
    assert texts == {"ul2": {"written": 0, "skipped": 7}, "byt5": {"written": 0, "skipped": 2}}
    after = {p: os.path.getmtime(p) for p in glob.glob(f"{tmp_path}/**/*.safetensors", recursive=True)}
    assert after == before


def test_shards_are_disjoint_and_complete(csv_path, media, tmp_path):
    run_caches(csv_path, media, tmp_path / "all")
    for rank in range(2):
        run_caches(csv_path, media, tmp_path / "split", rank=rank, world_size=2)
    names = {os.path.relpath(p, tmp_path / "all")
             for p in glob.glob(f"{tmp_path}/all/**/*.safetensors", recursive=True)}
    split = {os.path.relpath(p, tmp_path / "split")
             for p in glob.glob(f"{tmp_path}/split/**/*.safetensors", recursive=True)}
    assert names == split


def test_latent_mode_text_dropout_and_missing_latent(csv_path, media, tmp_path, caplog):
    run_caches(csv_path, media, tmp_path)
    os.remove(latent_path(f"{tmp_path}/latents", media.image_jpg))
    with caplog.at_level(logging.WARNING):
        dataset = VideoDataset(csv_path, BUCKETS, tae_latent_folder=f"{tmp_path}/latents",
                               text_emb_folders={k: f"{tmp_path}/{k}" for k in KINDS}, text_drop_prob=1.0)
    assert latent_path(f"{tmp_path}/latents", media.image_jpg) in caplog.text
    assert len(dataset) == 4
    empty = fake_embedding("")
    for batch in VideoDataLoader(dataset, seed=1, num_workers=0):
        for kind in KINDS:
            assert (batch[f"{kind}_emb"] == empty[0]).all() and (batch[f"{kind}_mask"] == 0).all()


def test_dropout_needs_the_cached_empty_prompt(csv_path, media, tmp_path):
    run_caches(csv_path, media, tmp_path)
    from mg.data.text_cache import text_emb_path

    os.remove(text_emb_path(f"{tmp_path}/ul2", ""))
    with pytest.raises(FileNotFoundError, match="empty-prompt embedding"):
        VideoDataset(csv_path, BUCKETS, tae_latent_folder=f"{tmp_path}/latents",
                     text_emb_folders={"ul2": f"{tmp_path}/ul2"}, text_drop_prob=0.1)


def test_latent_mode_with_pixels_returns_the_clip_each_latent_encodes(csv_path, media, tmp_path):
    run_caches(csv_path, media, tmp_path)
    dataset = VideoDataset(csv_path, BUCKETS, video_folder=media.folder, target_fps=10,
                           tae_latent_folder=f"{tmp_path}/latents", pixels=True)
    assert len(dataset) == 5 and "video" in dataset.column_names
    for index, sample in enumerate(dataset.samples):
        item = dataset.load_sample(index, np.random.default_rng(index))
        mean, _ = load_latent(latent_path(f"{tmp_path}/latents", sample.row.video))
        np.testing.assert_allclose(pool_moments(item["video"][None])[0][0], mean, atol=1e-6)
    for batch in VideoDataLoader(dataset, seed=0, num_workers=0):
        frames = batch["video"].shape[2]  # an image is one frame, a clip 8 per latent frame
        assert batch["video"].shape[:2] == (len(batch["latent"]), 3)
        assert frames == (1 if frames == 1 else 8 * batch["latent"].shape[2])
