"""train.py on a conditioned transformer (model.condition_channels): started from a text-to-video run's
checkpoint, it learns the condition weights (zero at the start) on conditions drawn per sample, in PyNative and
compiled; a wrong channel count is refused at start."""
import numpy as np
import pytest

import train
from mg.io import load_checkpoint
from mg.models.dit import load_dit
from mg.training.checkpoint import CheckpointManager, split_namespaces

from training.cached_dataset import train_args, write_cached_dataset

CONDITIONED = ["--model.condition_channels", "5", "--condition.none", "0.2", "--condition.first_frames", "0.4",
               "--condition.region", "0.4"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["1", "0"], ids=["pynative", "graph"])
def test_a_conditioned_model_starts_from_text_to_video_and_learns_its_condition(tmp_path, mode):
    data = write_cached_dataset(tmp_path / "data")
    common = ["--env.mode", mode, "--valid.csv_path", "null"]
    train.main(train_args(data, tmp_path / "t2v", 2, common))
    t2v = CheckpointManager(tmp_path / "t2v" / "ckpt").latest()
    train.main(train_args(data, tmp_path / "cond", 4, common + CONDITIONED + ["--model.pretrained_model_path",
                                                                             str(t2v)]))
    tensors, _ = load_checkpoint(CheckpointManager(tmp_path / "cond" / "ckpt").latest())
    weights = split_namespaces(tensors)["model"]
    start = split_namespaces(load_checkpoint(t2v)[0])["model"]
    assert np.abs(weights["condition_embed.proj.weight"]).max() > 0  # learned from zero
    assert all(name in weights for name in start)
    model = load_dit(CheckpointManager(tmp_path / "cond" / "ckpt").latest())
    assert model.config.condition_channels == 5 and model.condition_embed is not None


def test_a_condition_that_is_not_a_latent_and_its_mask_is_refused(tmp_path, capsys):
    data = write_cached_dataset(tmp_path / "data")
    with pytest.raises(SystemExit):
        train.main(train_args(data, tmp_path / "bad", 2, ["--model.condition_channels", "4"]))
    assert "model.condition_channels must be 0 (text-to-video) or model.in_channels + 1 = 5" in capsys.readouterr().err
