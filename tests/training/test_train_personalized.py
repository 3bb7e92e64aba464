"""train.py on a personalization model: the reference tower starts from a CLIP vision checkpoint directory
(model.reference_encoder_path), reference images reach the model and train the tower and its projection, a frozen
tower stays as loaded and is kept in the checkpoint and its export; bad combinations are refused at start."""
import cv2
import numpy as np
import pytest

import train
from mg.io import load_checkpoint
from mg.models.clip_vision import CLIPVisionConfig, CLIPVisionTransformer, write_clip_vision
from mg.models.dit import load_dit
from mg.training.checkpoint import CheckpointManager, export_dit, split_namespaces

from training.cached_dataset import train_args, write_cached_dataset

TOWER = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         image_size=16, patch_size=8)


def _personal_data(tmp_path):
    """The cached dataset with a reference image per row (every third row without one), and a tiny tower."""
    data = write_cached_dataset(tmp_path / "data")
    rng = np.random.default_rng(0)
    lines = data["csv"].read_text().splitlines()
    out = [lines[0] + ",reference_image"]
    for i, line in enumerate(lines[1:]):
        name = f"ref_{i}.png" if i % 3 else ""
        if name:
            cv2.imwrite(str(tmp_path / "data" / name), rng.integers(0, 256, (24, 20, 3), dtype=np.uint8))
        out.append(f"{line},{name}")
    csv = tmp_path / "data" / "personal.csv"
    csv.write_text("\n".join(out) + "\n")
    tower = {name: np.asarray(value) for name, value in
             ((p.name, p.asnumpy()) for p in CLIPVisionTransformer(TOWER).trainable_params())}
    write_clip_vision(tmp_path / "tower", TOWER, tower)
    args = ["--env.mode", "1", "--valid.csv_path", "null", "--dataset.csv_path", str(csv),
            "--dataset.video_folder", str(tmp_path / "data"), "--dataset.reference_drop_prob", "0.3",
            "--model.reference_encoder_path", str(tmp_path / "tower")]
    return data, args, tower


@pytest.mark.parametrize("frozen", [False, True], ids=["trained", "frozen"])
def test_a_personalization_run_trains_the_tower_unless_frozen(tmp_path, frozen):
    data, args, tower = _personal_data(tmp_path)
    args += ["--model.freeze_reference_encoder", str(frozen).lower()]
    train.main(train_args(data, tmp_path / "run", 3, args))
    latest = CheckpointManager(tmp_path / "run" / "ckpt").latest()
    spaces = split_namespaces(load_checkpoint(latest)[0])
    weights = spaces["model"]
    # (a key bias shifts all of a query's scores alike: the softmax ignores it, so it never gets a gradient)
    moved = [np.abs(weights["reference_encoder." + name] - value).max() > 0 for name, value in tower.items()
             if not name.endswith("k_proj.bias")]
    assert (not any(moved)) if frozen else all(moved)
    assert np.abs(weights["reference_projection.linear.weight"]).max() > 0
    export_dit(latest, tmp_path / "export")
    model = load_dit(tmp_path / "export.safetensors")
    assert model.config.reference_encoder == TOWER.to_dict()
    name = "reference_encoder.pre_layrnorm.weight"  # the EMA's where it tracks the tower, else the model's
    assert (name in spaces["ema"]) != frozen
    np.testing.assert_array_equal(model.reference_encoder.pre_layrnorm.weight.asnumpy(),
                                  spaces["ema"].get(name, weights[name]))


def test_reference_images_need_a_tower_and_a_frozen_tower_needs_one(tmp_path, capsys):
    data, args, _ = _personal_data(tmp_path)
    no_tower = args[:-2]
    with pytest.raises(ValueError, match="has reference images .* reference tower"):
        train.main(train_args(data, tmp_path / "a", 2, no_tower))
    with pytest.raises(SystemExit):
        train.main(train_args(data, tmp_path / "b", 2, no_tower + ["--model.freeze_reference_encoder", "true"]))
    assert "the model has no reference encoder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.main(train_args(data, tmp_path / "c", 2, args[:-1] + [str(tmp_path / "nowhere")]))
    assert "model.reference_encoder_path" in capsys.readouterr().err
