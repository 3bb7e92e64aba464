"""train.py on a conditioned transformer (model.condition_channels): started from a text-to-video run's
checkpoint, it learns the condition weights (zero at the start) on conditions drawn per sample, in PyNative and
compiled; a wrong channel count is refused at start."""
import mindspore as ms
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


def _edit_csv(data, root):
    """The cached dataset's rows, every other one an edit ("local") of the next row's latent."""
    lines = data["csv"].read_text().splitlines()
    rows = [line.split(",", 1) for line in lines[1:]]
    out = ["video,caption,source_video,task"]
    for i, (video, caption) in enumerate(rows):
        source, task = (rows[(i + 1) % len(rows)][0], "local") if i % 2 == 0 else ("", "")
        out.append(f"{video},{caption},{source},{task}")
    path = root / "edits.csv"
    path.write_text("\n".join(out) + "\n")
    return path


def test_an_editing_model_learns_its_task_embeddings_from_edit_rows(tmp_path):
    data = write_cached_dataset(tmp_path / "data")
    common = ["--env.mode", "1", "--valid.csv_path", "null"]
    train.main(train_args(data, tmp_path / "t2v", 2, common))
    t2v = CheckpointManager(tmp_path / "t2v" / "ckpt").latest()
    edits = ["--dataset.csv_path", str(_edit_csv(data, tmp_path))]
    with pytest.raises(ValueError, match="holds edits .* no task embeddings"):
        train.main(train_args(data, tmp_path / "no_tasks", 2, common + edits))
    train.main(train_args(data, tmp_path / "edit", 4, common + edits + CONDITIONED + [
        "--model.num_tasks", "6", "--model.pretrained_model_path", str(t2v)]))
    weights = split_namespaces(load_checkpoint(CheckpointManager(tmp_path / "edit" / "ckpt").latest())[0])["model"]
    vectors = weights["task_embed.vector"]  # zero at the start: each task's row moves only if the task was trained
    assert np.abs(vectors[1]).max() > 0 and np.abs(vectors[0]).max() > 0  # local edits and generation
    assert np.abs(vectors[2:]).max() == 0
    assert np.abs(weights["condition_embed.proj.weight"]).max() > 0


def test_task_embeddings_need_condition_channels(tmp_path, capsys):
    data = write_cached_dataset(tmp_path / "data")
    with pytest.raises(SystemExit):
        train.main(train_args(data, tmp_path / "bad", 2, ["--model.num_tasks", "6"]))
    assert "model.num_tasks must be 0 or 6" in capsys.readouterr().err


def test_an_edit_sample_knows_its_whole_source_and_the_others_draw_their_condition():
    from types import SimpleNamespace

    from mg.data.conditions import ConditionTasks
    from mg.training.train_step import FlowMatchingTrainStep

    rng = np.random.default_rng(0)
    x1 = rng.standard_normal((3, 4, 2, 2, 2)).astype(np.float32)
    source = rng.standard_normal(x1.shape).astype(np.float32)
    inputs = SimpleNamespace(latents=lambda batch, _, prefix: ms.Tensor(batch[prefix + "latent"]))
    step = SimpleNamespace(conditions=ConditionTasks(none=0.0, first_frames=1.0, region=0.0), inputs=inputs,
                           model=SimpleNamespace(config=SimpleNamespace(num_tasks=6)))
    batch = {"source_latent": source, "task": np.array([1, 0, 3], np.int32)}
    condition, task = FlowMatchingTrainStep.pixel_conditions(step, batch, ms.Tensor(x1), rng)
    condition = condition.asnumpy()
    for i in (0, 2):  # edits: the source, all known
        np.testing.assert_array_equal(condition[i, :4], source[i])
        assert (condition[i, 4] == 1).all()
    np.testing.assert_array_equal(condition[1, :4, :1], x1[1, :, :1])  # generation: its own first frame is given
    assert (condition[1, 4, 0] == 1).all() and (condition[1, 4, 1] == 0).all()
    np.testing.assert_array_equal(task.asnumpy(), [1, 0, 3])
