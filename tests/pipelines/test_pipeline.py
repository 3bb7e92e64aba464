"""The sampling pipeline on tiny random models: it computes exactly Euler + CFG + decode, seeds reproduce,
text reaches the encoders with the design's prompt conventions, cached embeddings equal on-the-fly ones."""
import numpy as np
import pytest
from mindspore import Tensor

from mg.data.text_cache import save_text_emb, text_emb_path
from mg.models.text_encoders import prepare_prompt
from mg.pipelines import MovieGenPipeline, TextConditioner, initial_noise, resolve_size

SMALL = dict(num_frames=9, height=16, width=16, fps=8, num_steps=2, jit=False, progress=False)
LATENTS = dict(SMALL, decode=False)  # TAE decoding dominates the time on a busy CPU; most tests need latents only


def test_latents_follow_an_independent_euler_cfg_loop(tiny_pipeline):
    pipe, w = tiny_pipeline, 3.0
    prompts = ["a red circle moving left", 'a sign saying "hi"']
    out = pipe(prompts, schedule="linear", guidance_scale=w, negative_prompt="", seed=5, batch_size=2, **SMALL)
    shape = (16, 2, 2, 2)  # 9 frames -> 2 latent frames; 16 px -> 2 latent rows/columns
    assert out.latents.shape == (2,) + shape and out.videos.shape == (2, 3, 9, 16, 16)

    cond = pipe.text.encode(prompts, 8)
    uncond = pipe.text.encode_negative("", 2, 8)

    def velocity(x, t, text):
        embs, masks = text
        return pipe.dit(Tensor(x), Tensor(np.full((2,), t, np.float32)), tuple(map(Tensor, embs)),
                        tuple(map(Tensor, masks))).asnumpy()

    x = np.stack([initial_noise(5, shape)] * 2)
    times = [0.0, 0.5, 1.0]
    for t0, t1 in zip(times[:-1], times[1:]):
        v_c, v_u = velocity(x, t0, cond), velocity(x, t0, uncond)
        x = x + (t1 - t0) * (v_u + w * (v_c - v_u))
    np.testing.assert_allclose(out.latents, x, rtol=1e-4, atol=1e-4)

    raw = x[:1] / 0.5 + 0.1  # the TAE's unscale_latent with scaling 0.5, shift 0.1, written out
    video = pipe.tae.decode(Tensor(raw.astype(np.float32)), 9).asnumpy()
    np.testing.assert_allclose(out.videos[:1], np.clip(video, -1, 1), rtol=1e-4, atol=1e-4)
    assert out.videos.min() >= -1 and out.videos.max() <= 1


def test_seed_reproducibility_and_batch_independence(tiny_pipeline):
    a = tiny_pipeline(["a blue square", "a green circle"], seed=1, batch_size=2, **LATENTS)
    b = tiny_pipeline(["a green circle"], seed=1, **LATENTS)
    c = tiny_pipeline(["a green circle"], seed=2, **LATENTS)
    assert a.videos is None
    np.testing.assert_allclose(a.latents[1], b.latents[0], atol=1e-5)
    assert np.abs(b.latents - c.latents).max() > 0.1
    assert a.seeds == [1, 1] and a.prompts == ["a blue square", "a green circle"]


def test_compiled_transformer_gives_the_same_latents(tiny_pipeline):
    prompts = ["a red circle moving left"]
    np.testing.assert_allclose(tiny_pipeline(prompts, **{**LATENTS, "jit": True}).latents,
                               tiny_pipeline(prompts, **LATENTS).latents, rtol=1e-4, atol=1e-5)


def test_frames_1_makes_an_image_without_fps_prefix(tiny_pipeline):
    out = tiny_pipeline(["a yellow triangle"], guidance_scale=1.0, **{**SMALL, "num_frames": 1})
    assert out.videos.shape == (1, 3, 1, 16, 16) and out.latents.shape == (1, 16, 1, 2, 2)
    assert out.fps is None


class RecordingEncoder:
    """Stands in for a TextEncoder: records prompts, returns embeddings that encode their length."""

    def __init__(self, width):
        self.width, self.calls = width, []

    def encode(self, prompts):
        self.calls.append(list(prompts))
        emb = np.zeros((len(prompts), 4, self.width), np.float32)
        emb[:, 0, 0] = [len(p) for p in prompts]
        return emb, np.ones((len(prompts), 4), np.uint8)


def test_prompt_conventions_reach_the_encoders():
    encoders = {"ul2": RecordingEncoder(6), "byt5": RecordingEncoder(3)}
    text = TextConditioner({"ul2": 6, "byt5": 3}, encoders)
    embs, masks = text.encode(['a sign "OPEN"', "a cat"], fps=8)
    assert encoders["ul2"].calls[-1] == ['FPS-8 a sign "OPEN"', "FPS-8 a cat"]
    assert encoders["byt5"].calls[-1] == ["OPEN", ""]
    assert embs[0].shape == (2, 4, 6) and masks[0].dtype == np.float32
    text.encode(["a cat"], fps=None)
    assert encoders["ul2"].calls[-1] == ["a cat"]
    null_embs, _ = text.encode_negative("", batch=3, fps=8)
    assert encoders["ul2"].calls[-1] == [""] and null_embs[0].shape == (3, 4, 6)
    text.encode_negative("blurry", batch=1, fps=8)
    assert encoders["ul2"].calls[-1] == ["FPS-8 blurry"]
    with pytest.raises(ValueError, match="6-wide but the model expects 5"):
        TextConditioner({"ul2": 5}, {"ul2": RecordingEncoder(6)}).encode(["x"], 8)
    with pytest.raises(ValueError, match=r"no encoder checkpoint or embedding cache folder was given for \['byt5'\]"):
        TextConditioner({"ul2": 6, "byt5": 3}, {"ul2": RecordingEncoder(6)})


def test_cached_embeddings_give_the_same_video(tiny_pipeline, tmp_path):
    prompts, fps = ["a red square moving up"], 8
    folders = {kind: str(tmp_path / kind) for kind in tiny_pipeline.text.widths}
    for kind, folder in folders.items():
        for prompt in [prepare_prompt(prompts[0], fps, kind), ""]:
            emb, mask = tiny_pipeline.text.encoders[kind].encode([prompt])
            save_text_emb(text_emb_path(folder, prompt), emb[0], mask[0], prompt, kind)
    cached = MovieGenPipeline(tiny_pipeline.dit, tiny_pipeline.tae,
                              TextConditioner(tiny_pipeline.text.widths, cache_folders=folders))
    np.testing.assert_allclose(cached(prompts, **LATENTS).latents, tiny_pipeline(prompts, **LATENTS).latents,
                               atol=1e-5)
    with pytest.raises(FileNotFoundError, match="no cached ul2 embedding for prompt 'FPS-8 a dog'"):
        cached(["a dog"], **LATENTS)


def test_bad_sampling_options(tiny_pipeline):
    with pytest.raises(ValueError, match="unknown schedule 'cosine'"):
        tiny_pipeline(["x"], **{**SMALL, "schedule": "cosine"})
    with pytest.raises(ValueError, match="num_steps must be a positive integer"):
        tiny_pipeline(["x"], **{**SMALL, "num_steps": -3})
    with pytest.raises(ValueError, match="height=24 must be a positive multiple of 16"):
        tiny_pipeline(["x"], **{**SMALL, "height": 24})
    with pytest.raises(ValueError, match="positional tables hold at most"):
        tiny_pipeline(["x"], **{**SMALL, "num_frames": 40})


def test_resolve_size():
    assert resolve_size(None, None, "16:9", 256, 16) == (256, 448)
    assert resolve_size(None, None, "9:16", 256, 16) == (448, 256)
    assert resolve_size(64, 32, "16:9", 256, 16) == (64, 32)
    with pytest.raises(ValueError, match="aspect_ratio 'wide'"):
        resolve_size(None, None, "wide", 256, 16)
    with pytest.raises(ValueError, match="both height and width"):
        resolve_size(64, None, None, None, 16)
