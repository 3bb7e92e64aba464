"""The transformer's reference image (personalization): the vision tower's projected tokens follow the text in the
context and change the output, a masked reference is no reference, they get gradients (the tower too), a
text-to-video checkpoint loads into a model with a tower, and a training run's tower starts from a Hugging Face-format
CLIP vision checkpoint."""
import mindspore as ms
import numpy as np
import pytest

from mg.io import CheckpointError
from mg.models.clip_vision import CLIPVisionConfig, write_clip_vision
from mg.models.dit import MovieGenDiT, dit_config, load_dit_weights, parameter_count, save_dit
from mg.training.dit_init import build_dit

from dit.helpers import randomize

TOWER = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         image_size=16, patch_size=8)
BASE = dict(depth=2, dim=32, ffn_dim=48, num_heads=4, in_channels=4, text_encoders={"ul2": 12}, max_t=2, max_h=4,
            max_w=4)
PERSONAL = dict(BASE, reference_encoder=TOWER.to_dict())


def _inputs(seed=1):
    rng = np.random.default_rng(seed)
    x = ms.Tensor(rng.standard_normal((2, 4, 2, 4, 4)).astype(np.float32))
    t = ms.Tensor(np.array([0.3, 0.7], np.float32))
    text = (ms.Tensor(rng.standard_normal((2, 5, 12)).astype(np.float32)),)
    mask = (ms.Tensor(np.ones((2, 5), np.float32)),)
    images = np.stack([np.full((3, 16, 16), -0.8), np.full((3, 16, 16), 0.8)]) + rng.uniform(-0.2, 0.2, (2, 3, 16, 16))
    reference = ms.Tensor(images.astype(np.float32))  # a dark and a bright image
    return x, t, text, mask, reference


def _model():
    return randomize(MovieGenDiT(dit_config("tiny", **PERSONAL)), scale=0.3)


def test_reference_tokens_reach_the_output_and_a_masked_reference_is_none():
    model = _model()
    x, t, text, mask, reference = _inputs()
    without = model(x, t, text, mask).asnumpy()
    ones, zeros = ms.Tensor(np.ones(2, np.float32)), ms.Tensor(np.zeros(2, np.float32))
    given = model(x, t, text, mask, None, None, reference, ones).asnumpy()
    assert np.abs(given - without).max() > 1e-3
    other = model(x, t, text, mask, None, None, reference[::-1], ones).asnumpy()
    assert np.abs(other - given).max() > 1e-3  # the image itself matters, not only that one is there
    np.testing.assert_allclose(model(x, t, text, mask, None, None, reference, zeros).asnumpy(), without, atol=1e-5)
    half = model(x, t, text, mask, None, None, reference, ms.Tensor(np.array([1, 0], np.float32))).asnumpy()
    np.testing.assert_allclose(half[0], given[0], atol=1e-5)
    np.testing.assert_allclose(half[1], without[1], atol=1e-5)
    assert parameter_count(model.config) == sum(p.size for p in model.trainable_params())


def test_the_tower_and_its_projection_get_gradients():
    model = _model()
    x, t, text, mask, reference = _inputs()
    ones = ms.Tensor(np.ones(2, np.float32))
    params = [p for p in model.trainable_params() if p.name.startswith(("reference_encoder", "reference_projection"))]

    def loss(*args):
        return (model(*args) ** 2).mean()

    grads = ms.grad(loss, None, params)(x, t, text, mask, None, None, reference, ones)
    assert len(params) > 4 and all(np.abs(g.asnumpy()).max() > 0 for g in grads)


def test_a_text_to_video_checkpoint_loads_and_the_tower_starts_from_its_clip_checkpoint(tmp_path):
    t2v = randomize(MovieGenDiT(dit_config("tiny", **BASE)), scale=0.3)
    weights = {p.name: p.asnumpy() for p in t2v.trainable_params()}
    with pytest.raises(CheckpointError, match=r"missing \[reference_encoder\."):  # a partial tower is refused, not silently kept
        load_dit_weights(MovieGenDiT(dit_config("tiny", **PERSONAL)),
                         {**weights, "reference_encoder.pre_layrnorm.weight": np.ones(16, np.float32)})
    rng = np.random.default_rng(3)
    tower = {p.name[len("reference_encoder."):]: rng.normal(0, 0.1, p.shape).astype(np.float32)
             for p in MovieGenDiT(dit_config("tiny", **PERSONAL)).trainable_params()
             if p.name.startswith("reference_encoder.")}
    write_clip_vision(tmp_path / "clip", TOWER, tower)
    save_dit(t2v, tmp_path / "t2v")
    model = build_dit(dit_config("tiny", **PERSONAL), seed=0, pretrained=tmp_path / "t2v.safetensors",
                      reference_encoder=tmp_path / "clip")
    got = {p.name: p.asnumpy() for p in model.trainable_params()}
    for name, value in tower.items():
        np.testing.assert_array_equal(got["reference_encoder." + name], value)
    np.testing.assert_array_equal(got["blocks.0.attn.qkv.weight"], weights["blocks.0.attn.qkv.weight"])
