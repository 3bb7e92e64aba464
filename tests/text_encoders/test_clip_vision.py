"""CLIP vision tower against transformers' CLIPVisionModel and CLIPModel; write_clip_vision read by transformers."""
import json

import mindspore as ms
import numpy as np
import pytest
import torch
import transformers

from mg.io import CheckpointError, state_dict
from mg.models.clip_vision import (
    CLIPVisionConfig, CLIPVisionTransformer, clip_vision_weight_name, clip_vision_weights, load_clip_vision,
    read_clip_vision_config, write_clip_vision,
)

SIZES = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32,
             patch_size=8)


def save_clip_vision(out_dir, hidden_act="quick_gelu", seed=0):
    """Random CLIPVisionModel saved with save_pretrained (safetensors); returns the torch model (eval mode)."""
    torch.manual_seed(seed)
    model = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(hidden_act=hidden_act, **SIZES)).eval()
    scale_embeddings(getattr(model, "vision_model", model).embeddings)  # transformers 5 drops vision_model
    model.save_pretrained(out_dir, safe_serialization=True)
    return model


def scale_embeddings(embeddings):
    """The default init (std ~0.02) leaves class and positions nearly zero; larger makes a mix-up fail the test."""
    with torch.no_grad():
        embeddings.class_embedding.normal_(0, 1.0)
        embeddings.position_embedding.weight.normal_(0, 1.0)


def pixels(seed=0):
    return np.random.default_rng(seed).normal(size=(2, 3, 32, 32)).astype(np.float32)


def hidden_state(tower, x):
    with torch.no_grad():
        return tower(pixel_values=torch.from_numpy(x)).last_hidden_state.numpy()


@pytest.mark.parametrize("hidden_act", ["quick_gelu", "gelu"])
def test_vision_tower_matches_transformers(tmp_path, hidden_act):
    ref = save_clip_vision(tmp_path, hidden_act)
    tower = load_clip_vision(tmp_path)
    assert tower.config.hidden_act == hidden_act and tower.config.num_tokens == 17
    x = pixels()
    out = tower(ms.Tensor(x)).asnumpy()
    assert out.shape == (2, 17, 32)
    np.testing.assert_allclose(out, hidden_state(ref, x), atol=1e-4, rtol=0)


def test_clip_model_checkpoint_loads_its_vision_tower(tmp_path):
    torch.manual_seed(1)
    text = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    cfg = transformers.CLIPConfig(text_config=text, vision_config=dict(hidden_act="gelu", **SIZES))
    ref = transformers.CLIPModel(cfg).eval()
    scale_embeddings(ref.vision_model.embeddings)
    ref.save_pretrained(tmp_path, safe_serialization=True)

    tower = load_clip_vision(tmp_path)
    x = pixels(1)
    np.testing.assert_allclose(tower(ms.Tensor(x)).asnumpy(), hidden_state(ref.vision_model, x), atol=1e-4, rtol=0)
    shapes, read = clip_vision_weights(tmp_path)
    params = state_dict(tower)
    assert shapes == {name: value.shape for name, value in params.items()}
    np.testing.assert_array_equal(read("embeddings.class_embedding"), params["embeddings.class_embedding"])


def test_weight_names():
    assert clip_vision_weight_name("vision_model.encoder.layers.0.mlp.fc1.weight") == "encoder.layers.0.mlp.fc1.weight"
    assert clip_vision_weight_name("pre_layrnorm.bias") == "pre_layrnorm.bias"  # transformers 5: no prefix
    for unused in ("text_model.encoder.layers.0.mlp.fc1.weight", "vision_model.post_layernorm.weight",
                   "visual_projection.weight", "text_projection.weight", "logit_scale",
                   "vision_model.embeddings.position_ids"):
        assert clip_vision_weight_name(unused) is None


def test_written_tower_is_read_by_transformers(tmp_path):
    save_clip_vision(tmp_path / "src")
    cfg = CLIPVisionConfig(**SIZES, image_mean=(0.5, 0.4, 0.3), image_std=(0.2, 0.3, 0.4))
    out = write_clip_vision(tmp_path / "out", cfg, state_dict(load_clip_vision(tmp_path / "src")))

    ref, info = transformers.CLIPVisionModel.from_pretrained(out, output_loading_info=True)
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    assert {k.removeprefix("vision_model.") for k in info["missing_keys"]} <= {"post_layernorm.weight",
                                                                               "post_layernorm.bias"}
    x = pixels(2)
    np.testing.assert_allclose(load_clip_vision(out)(ms.Tensor(x)).asnumpy(), hidden_state(ref.eval(), x), atol=1e-4,
                               rtol=0)
    assert read_clip_vision_config(out) == cfg  # mean and std come back from preprocessor_config.json
    processor = json.loads((out / "preprocessor_config.json").read_text())
    assert processor["crop_size"] == {"height": 32, "width": 32} and processor["size"] == {"shortest_edge": 32}
    assert json.loads(json.dumps(cfg.to_dict())) == cfg.to_dict()

    with pytest.raises(FileExistsError, match="out: not empty"):
        write_clip_vision(out, cfg, {})
    with pytest.raises(CheckpointError, match="weights do not fit"):
        write_clip_vision(tmp_path / "bad", cfg, {"embeddings.class_embedding": np.zeros(8, np.float32)})
    assert not (tmp_path / "bad").exists()


def test_normalize_maps_project_range_to_clip_input():
    cfg = CLIPVisionConfig(**SIZES)
    tower = CLIPVisionTransformer(cfg)
    images = np.random.default_rng(3).uniform(-1, 1, size=(2, 3, 4, 4)).astype(np.float32)
    mean, std = np.array(cfg.image_mean).reshape(1, 3, 1, 1), np.array(cfg.image_std).reshape(1, 3, 1, 1)
    expected = ((images + 1) / 2 - mean) / std
    np.testing.assert_allclose(tower.normalize(ms.Tensor(images)).asnumpy(), expected, atol=1e-5)


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint directory .*no_such_clip.* does not exist"):
        load_clip_vision(tmp_path / "no_such_clip")


def test_wrong_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5", **SIZES}))
    with pytest.raises(ValueError, match="model_type 't5' is not a CLIP checkpoint"):
        load_clip_vision(tmp_path)


def test_config_errors_name_the_source():
    with pytest.raises(ValueError, match="src.json: CLIP vision config lacks \\['patch_size'\\]"):
        CLIPVisionConfig.from_hf({k: v for k, v in SIZES.items() if k != "patch_size"}, "src.json")
    with pytest.raises(ValueError, match="src.json: .*image_size 30 is not a multiple of patch_size 8"):
        CLIPVisionConfig.from_hf({"vision_config": {**SIZES, "image_size": 30}}, "src.json")
    with pytest.raises(ValueError, match="hidden_size 32 is not a multiple of num_attention_heads 5"):
        CLIPVisionConfig(**{**SIZES, "num_attention_heads": 5})


def test_weights_that_do_not_fit_the_config(tmp_path):
    save_clip_vision(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 48}))
    with pytest.raises(CheckpointError, match=f"{tmp_path} does not fit CLIPVisionTransformer.*fc1"):
        load_clip_vision(tmp_path)


def test_tower_trains_under_jit():
    """The tower is trained inside the transformer's compiled step: jit must compile it and agree with PyNative."""
    tower = CLIPVisionTransformer(CLIPVisionConfig(**SIZES))
    images = ms.Tensor(np.random.default_rng(4).uniform(-1, 1, size=(2, 3, 32, 32)).astype(np.float32))

    def loss(x):
        return (tower(tower.normalize(x)) ** 2).mean()

    step = ms.value_and_grad(loss, None, tower.trainable_params())
    (value, grads), (jit_value, jit_grads) = step(images), ms.jit(step)(images)
    np.testing.assert_allclose(jit_value.asnumpy(), value.asnumpy(), rtol=1e-5)
    for grad, jit_grad in zip(grads, jit_grads):
        np.testing.assert_allclose(jit_grad.asnumpy(), grad.asnumpy(), atol=1e-5)
