"""The editing model's training data (Movie Gen Edit's stages I and II in the toy world): every pair shows the edit
its instruction asks for, animated pairs share one motion, no row pairs two real videos, and the dataset returns an
edit's source beside its result."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mg.data import VideoDataset
from mg.data.conditions import TASKS, task_index
from mg.data.table import read_table
from mg.data.toy_edit_data import (text_to_video_rows, write_animated_edits, write_edit_csv, write_image_edits,
                                   write_marked, write_scene_videos)
from mg.data.toy_edits import ToyEdit, background_name, judge, parse_instruction, shape_masks
from mg.data.toy_world import write_toy_dataset
from mg.data.video_io import probe, read_frames


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    folder = tmp_path_factory.mktemp("toy")
    write_toy_dataset(folder, videos_per_combo=1, images_per_pair=0, shape_size=24)
    rows = {"images": write_image_edits(folder, stills_per_pair=1), "animated": write_animated_edits(folder, count=6),
            "marked": write_marked(folder, folder / "train.csv"), "t2v": text_to_video_rows(folder / "train.csv")}
    return folder, rows


def _frames(folder, name):
    path = str(folder / name)
    return read_frames(path, np.arange(probe(path).num_frames))


def _edit(row):
    return ToyEdit("mark") if row["task"] == "segment" else parse_instruction(row["caption"])


def test_every_pair_shows_its_edit(toy):
    folder, rows = toy
    assert len(rows["images"]) == 12 * 14  # 12 (colour, shape) stills, 8 + 3 + 3 edits of their source scenes
    for row in rows["images"] + rows["marked"] + rows["animated"]:
        edit = _edit(row)
        assert row["task"] == edit.task
        source, target = _frames(folder, row["source_video"]), _frames(folder, row["video"])
        assert source.shape == target.shape and len(source) == int(row["frames"])
        assert judge(edit, source, target)["success"], row


def test_animated_pairs_move_source_and_result_along_one_path(toy):
    folder, rows = toy
    kept = [r for r in rows["animated"] if r["task"] not in ("remove", "global")]
    assert kept
    for row in kept:
        source, target = _frames(folder, row["source_video"]), _frames(folder, row["video"])
        assert judge(_edit(row), source, target)["path_error_px"] <= 2.5  # rotated shapes' boxes differ a little
        ys, xs = zip(*(np.nonzero(m) for m in shape_masks(source)[[0, -1]]))
        assert max(abs(xs[1].mean() - xs[0].mean()), abs(ys[1].mean() - ys[0].mean())) > 1.0  # it moves


def test_no_row_pairs_two_real_videos(toy):
    folder, rows = toy
    real = set(pd.read_csv(folder / "train.csv")["video"]) | set(pd.read_csv(folder / "heldout.csv")["video"])
    edits = [r for group in ("images", "animated", "marked") for r in rows[group]]
    assert all(not (r["source_video"] in real and r["video"] in real) for r in edits)
    assert all(r["task"] == "generate" and not r["source_video"] for r in rows["t2v"])
    assert len(rows["t2v"]) == len(pd.read_csv(folder / "train.csv").query("frames > 1"))


def test_the_dataset_returns_each_edit_with_its_source_and_task(toy, tmp_path):
    folder, rows = toy
    csv = tmp_path / "edits.csv"
    chosen = rows["marked"][:2] + rows["t2v"][:2]
    write_edit_csv(csv, chosen)
    with pytest.raises(FileExistsError):
        write_edit_csv(csv, chosen)
    dataset = VideoDataset(str(csv), [{"height": 64, "width": 64, "frames": 17, "batch_size": 4}],
                           video_folder=str(folder), random_clip_start=False)
    assert dataset.has_edits and "source_video" in dataset.column_names and "task" in dataset.column_names
    batch, failed = dataset.load_batch([0, 1, 2, 3], [0, 1, 2, 3])
    assert not failed
    np.testing.assert_array_equal(batch["task"], [task_index("segment")] * 2 + [task_index("generate")] * 2)
    source = _frames(folder, chosen[0]["source_video"])
    np.testing.assert_allclose(batch["source_video"][0].transpose(1, 2, 3, 0), source / 127.5 - 1.0, atol=1e-6)
    assert not batch["source_video"][2:].any()  # text-to-video rows: no source


def test_edit_columns_are_checked(tmp_path):
    csv = tmp_path / "bad.csv"
    csv.write_text("video,caption,source_video,task\na.mp4,make it blue,b.mp4,recolour\n")
    with pytest.raises(ValueError, match=r"bad.csv, line 2: unknown task 'recolour'"):
        read_table(str(csv))
    csv.write_text("video,caption,source_video,task\na.mp4,make it blue,b.mp4,\n")
    with pytest.raises(ValueError, match="line 2: an edit row needs both"):
        read_table(str(csv))
    csv.write_text("video,caption,source_video,task\na.mp4,make it blue,b.mp4,local\nc.mp4,a red circle,,\n")
    rows = read_table(str(csv), "data")
    assert (rows[0].source_path, rows[0].task, rows[1].task) == (str(Path("data/b.mp4")), "local", TASKS[0])


def test_the_tae_scenes_show_what_edits_leave_for_training_combinations_only(toy):
    folder, _ = toy
    rows = write_scene_videos(folder)
    held = set(pd.read_csv(folder / "heldout.csv")["caption"].str.rsplit(",", n=1).str[0])
    assert len(rows) == 5 * 44 and not any(r["caption"].rsplit(",", 1)[0] in held for r in rows)
    names = ("white", "added", "white_added", "removed", "marked")  # the first combination's, in this order
    assert all(r["video"].endswith(f"_{name}.mp4") for r, name in zip(rows, names))
    first = {name: _frames(folder, r["video"]) for r, name in zip(rows, names)}
    assert background_name(first["white"]) == "white" and background_name(first["added"]) == "grey"
    assert judge(ToyEdit("add"), first["white"], first["white_added"])["success"]
    assert not shape_masks(first["removed"]).any()
    assert judge(ToyEdit("mark"), first["added"], first["marked"])["success"]
