import mindspore as ms
import numpy as np
import pytest

from mg.io import CheckpointError, save_checkpoint, state_dict
from mg.models.dit import MovieGenDiT, load_dit, save_dit
from mg.models.dit.io import config_to_dict
from mg.training.checkpoint import merge_namespaces

from dit.helpers import random_model, text_inputs, tiny_config


def run(model, shape=(1, 4, 2, 4, 4)):
    rng = np.random.default_rng(5)
    embs, masks = text_inputs(shape[0], [[3], [2]], rng)
    x = ms.Tensor(rng.standard_normal(shape).astype(np.float32))
    return model(x, ms.Tensor(np.array([0.3], np.float32)), embs, masks).asnumpy()


def test_saved_model_reloads_with_identical_outputs(tmp_path):
    model = random_model(seed=2)
    save_dit(model, tmp_path / "dit")
    loaded = load_dit(tmp_path / "dit")
    assert loaded.config == model.config
    np.testing.assert_array_equal(run(loaded), run(model))
    with pytest.raises(FileExistsError):
        save_dit(model, tmp_path / "dit")


def test_training_checkpoint_prefers_ema_and_expands_tables(tmp_path):
    model, ema = random_model(seed=2, max_t=1, max_h=2, max_w=2), random_model(seed=3, max_t=1, max_h=2, max_w=2)
    tensors = merge_namespaces({"model": state_dict(model), "ema": state_dict(ema)})
    save_checkpoint(tmp_path / "step_10", tensors, {"dit_config": config_to_dict(model.config)})
    np.testing.assert_array_equal(run(load_dit(tmp_path / "step_10"), (1, 4, 1, 4, 4)), run(ema, (1, 4, 1, 4, 4)))
    np.testing.assert_array_equal(run(load_dit(tmp_path / "step_10", prefer_ema=False), (1, 4, 1, 4, 4)),
                                  run(model, (1, 4, 1, 4, 4)))
    grown = load_dit(tmp_path / "step_10", max_t=4, max_h=4, max_w=4)
    assert grown.pos_embed.table_h.shape[0] == 4
    assert run(grown, (1, 4, 3, 8, 8)).shape == (1, 4, 3, 8, 8)


def test_wrong_checkpoints_give_clear_errors(tmp_path):
    save_checkpoint(tmp_path / "other", {"w": np.zeros(3, np.float32)}, {})
    with pytest.raises(CheckpointError, match="no 'dit_config'"):
        load_dit(tmp_path / "other")
    model = random_model()
    save_checkpoint(tmp_path / "partial", {"blocks.0.attn.qkv.weight": np.zeros((96, 32), np.float32)},
                    {"dit_config": config_to_dict(model.config)})
    with pytest.raises(CheckpointError, match="partial"):
        load_dit(tmp_path / "partial")
    with pytest.raises(CheckpointError):
        load_dit(tmp_path / "missing")
