"""Curation for quality tuning: the toy scorer reads each flaw from the pixels, the rules keep what they say (NaN never
passes), the toy pool holds what it says, and tools/curate_videos.py keeps the clean clips of a pool and refuses bad
requests before reading any clip."""
import re
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from mg.data import curation
from mg.data.curation import curate, numeric_columns, register_scorer, score_table, toy_scores
from mg.data.table import read_table
from mg.data.toy_pool import POOL_COLUMNS, QUALITY_KINDS, write_toy_pool
from mg.data.toy_world import DEFAULT_HOLDOUT, ToyClip, caption, parse_combo, render
from mg.data.video_io import probe

SUGGESTED = "{sharpness: 0.5, centred: 0.74, visible: 1.0}"  # the tool's suggested toy thresholds


@pytest.fixture(scope="module")
def tool(load_script):
    return load_script("tools/curate_videos.py")


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pool")
    return folder, write_toy_pool(folder, seed=0, per_combo=2)


def _centred_square():
    """A clean 24 px square moving right whose path (x 12-51, y 20-43) is centred in a 64x64 frame."""
    return render(ToyClip("red", "square", "right", 24, 12, 20, 1), 64, 64, 17)


# ---- the toy scorer ----------------------------------------------------------------------------------------------
def test_toy_scores_a_clean_centred_render_high_and_a_blurred_copy_less_sharp():
    clean = toy_scores(_centred_square())
    assert clean["sharpness"] > 0.9 and clean["centred"] == pytest.approx(1.0) and clean["visible"] == 1.0
    blurred = toy_scores(np.stack([cv2.GaussianBlur(f, (0, 0), 2.0) for f in _centred_square()]))
    assert blurred["sharpness"] < 0.5 * clean["sharpness"]
    assert blurred["centred"] == pytest.approx(1.0, abs=0.01) and blurred["visible"] == 1.0


def test_toy_scores_read_a_cut_and_an_off_centre_clip():
    # from x = 34 moving right: from frame 6 on the square touches the right border
    cut = toy_scores(render(ToyClip("red", "square", "right", 24, 34, 20, 1), 64, 64, 17))
    assert cut["visible"] == pytest.approx(6 / 17)
    corner = toy_scores(render(ToyClip("red", "square", "right", 24, 2, 2, 1), 64, 64, 17))
    # path middle (21.5, 13.5) against the centre (31.5, 31.5): 20.6 px of a 45.3 px half diagonal
    assert corner["centred"] == pytest.approx(1 - np.hypot(10, 18) / np.hypot(32, 32), abs=1e-6)
    assert corner["visible"] == 1.0


def test_visible_counts_a_frame_that_shows_too_little_of_the_shape():
    frames = _centred_square()
    frames[0] = frames[-1, 0, 0]  # background only
    frames[0, 26:38, 26:38] = (220, 40, 40)  # a quarter of the square's area
    assert toy_scores(frames)["visible"] == pytest.approx(16 / 17)


def test_toy_scores_of_an_empty_clip_are_nan_and_invisible():
    scores = toy_scores(np.full((3, 64, 64, 3), 128, np.uint8))
    assert np.isnan(scores["sharpness"]) and np.isnan(scores["centred"]) and scores["visible"] == 0.0


# ---- rules -------------------------------------------------------------------------------------------------------
def _table():
    """Text columns as read from a CSV (aesthetic), float ones with NaN (motion), and text that is not numeric."""
    return pd.DataFrame({"video": list("abcde"), "caption": ["x"] * 5, "aesthetic": ["5", "6", "", "7", "4"],
                         "motion": [1.0, 50.0, 2.0, np.nan, 3.0]})


def test_curate_keeps_rows_that_pass_every_rule_and_nan_passes_none():
    kept, report = curate(_table(), minimum={"aesthetic": 5}, maximum={"motion": 40})
    assert kept["video"].tolist() == ["a"]
    assert report == {"rows_in": 5, "rows_out": 1, "dropped": {"aesthetic >= 5": 2, "motion <= 40": 2}}
    assert curate(_table())[0]["video"].tolist() == list("abcde")


def test_curate_top_by_keeps_the_highest_with_a_value():
    kept, report = curate(_table(), top=2, by="aesthetic")
    assert kept["video"].tolist() == ["d", "b"] and report["dropped"] == {"top 2 by aesthetic": 3}
    assert curate(_table(), top=10, by="aesthetic")[0]["video"].tolist() == ["d", "b", "a", "e"]
    assert curate(_table(), by="aesthetic")[0]["video"].tolist() == ["d", "b", "a", "e", "c"]  # ordered, NaN last
    kept, report = curate(_table(), minimum={"motion": 2}, top=1, by="motion")
    assert kept["video"].tolist() == ["b"] and report["dropped"] == {"motion >= 2": 2, "top 1 by motion": 2}


def test_rules_on_unknown_or_text_columns_name_the_column_and_list_the_numeric_ones():
    assert numeric_columns(_table()) == ["aesthetic", "motion"]
    for column in ("sharpnes", "caption"):
        with pytest.raises(ValueError, match=rf"'{column}'.*\['aesthetic', 'motion'\]"):
            curate(_table(), minimum={column: 1})
    with pytest.raises(ValueError, match="'caption'"):
        curate(_table(), top=1, by="caption")
    with pytest.raises(ValueError, match="top needs by"):
        curate(_table(), top=1)
    with pytest.raises(ValueError, match="finite number"):
        curate(_table(), maximum={"motion": float("nan")})


# ---- the pool ----------------------------------------------------------------------------------------------------
def test_pool_writes_training_combinations_of_every_kind(pool):
    folder, counts = pool
    table = pd.read_csv(folder / "pool.csv", keep_default_na=False)
    assert tuple(table.columns) == POOL_COLUMNS and len(table) == 44 * 2
    assert counts == table["quality"].value_counts().to_dict() and set(counts) == set(QUALITY_KINDS)
    assert min(counts.values()) > 0
    combos = set(zip(table["colour"], table["shape"], table["direction"]))
    assert len(combos) == 44 and not combos & {parse_combo(h) for h in DEFAULT_HOLDOUT}
    for row in table.itertuples():
        assert row.caption == caption(row.colour, row.shape, row.direction, 8)
    info = probe(str(folder / table["video"][0]))
    assert (info.num_frames, info.height, info.width) == (17, 64, 64)
    with pytest.raises(FileExistsError):
        write_toy_pool(folder, per_combo=1)


# ---- the tool ----------------------------------------------------------------------------------------------------
def test_select_keeps_the_clean_clips_of_a_pool(pool, tool, tmp_path, capsys):
    folder, counts = pool
    output = tmp_path / "elsewhere" / "curated.csv"
    report = tool.main(["select", "--csv", str(folder / "pool.csv"), "--scorer", "toy", "--min", SUGGESTED,
                        "--output", str(output)])
    kept = pd.read_csv(output, keep_default_na=False)
    assert kept["quality"].tolist() == ["clean"] * counts["clean"]
    assert report["rows_in"] == 88 and report["rows_out"] == counts["clean"] and '"rows_out"' in capsys.readouterr().out
    assert {"sharpness", "centred", "visible"} <= set(kept.columns)
    rows = read_table(str(output), video_folder=str(output.parent))  # paths rewritten to resolve from there
    assert all(Path(r.path).is_file() for r in rows) and rows[0].video.startswith("../")


def _run_error(tool, argv, capsys):
    with pytest.raises(SystemExit) as stop:
        tool.main(argv)
    assert stop.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--scorer", "aesthetic"], "unknown scorer 'aesthetic'.*'toy'"),
    (["--min", "{sharpnes: 0.5}"], "'sharpnes' is not a numeric column"),
    (["--min", "{sharpness: high}"], "Expected a <class 'float'>"),
    (["--top", "5"], "top needs by"),
])
def test_select_refuses_bad_requests_before_reading_a_clip(pool, tool, tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.setattr(tool, "score_table", lambda *a, **k: pytest.fail("scored before checking the request"))
    argv = ["select", "--csv", str(pool[0] / "pool.csv"), "--output", str(tmp_path / "out.csv"), *extra]
    assert re.search(message, _run_error(tool, argv, capsys).replace("\n", " "))
    assert not (tmp_path / "out.csv").exists()


def test_select_refuses_a_missing_csv_and_an_existing_output(pool, tool, tmp_path, capsys):
    assert "CSV file not found" in _run_error(tool, ["select", "--csv", str(tmp_path / "no.csv"), "--output",
                                                     str(tmp_path / "out.csv")], capsys)
    output = tmp_path / "out.csv"
    output.write_text("keep me\n")
    argv = ["select", "--csv", str(pool[0] / "pool.csv"), "--scorer", "none", "--min", "{frames: 17}",
            "--output", str(output)]
    assert "--overwrite true" in _run_error(tool, argv, capsys)
    assert output.read_text() == "keep me\n"
    assert tool.main(argv + ["--overwrite", "true"])["rows_out"] == 88
    assert len(pd.read_csv(output)) == 88


def test_an_unreadable_video_gets_nan_and_is_dropped(pool, tool, tmp_path, write_csv):
    good = str(pool[0] / pd.read_csv(pool[0] / "pool.csv")["video"][0])
    (tmp_path / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(2048))
    csv_path = write_csv([(good, "a"), ("corrupt.mp4", "b"), ("missing.mp4", "c")])
    scored = score_table(csv_path, str(tmp_path), "toy")
    assert np.isnan(scored["sharpness"][1:]).all() and not np.isnan(scored["sharpness"][0])
    assert scored.attrs["unreadable"] == ["corrupt.mp4", "missing.mp4"]
    report = tool.main(["select", "--csv", csv_path, "--min", "{visible: 0.0}", "--output", str(tmp_path / "o.csv")])
    assert report["rows_out"] == 1 and report["unreadable"] == ["corrupt.mp4", "missing.mp4"]


def test_a_registered_scorer_plugs_in_through_a_module(pool, tool, tmp_path, monkeypatch):
    monkeypatch.setattr(curation, "SCORERS", dict(curation.SCORERS))
    (tmp_path / "curation_test_scorers.py").write_text(
        "from mg.data.curation import register_scorer\n\n"
        "@register_scorer('frames_read', columns=('frames_read',))\n"
        "def frames_read(frames):\n"
        "    return {'frames_read': len(frames)}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    output = tmp_path / "out.csv"
    try:
        tool.main(["select", "--csv", str(pool[0] / "pool.csv"), "--scorer_module", "curation_test_scorers",
                   "--scorer", "frames_read", "--max_frames", "5", "--top", "3", "--by", "frames_read",
                   "--output", str(output)])
    finally:
        sys.modules.pop("curation_test_scorers", None)
    assert pd.read_csv(output)["frames_read"].tolist() == [5, 5, 5]
    with pytest.raises(ValueError, match="exists already"):
        register_scorer("toy", columns=("x",))(toy_scores)


# ---- mixing ------------------------------------------------------------------------------------------------------
def _numbered(name, rows):
    return pd.DataFrame({"video": [f"{name}{i}.mp4" for i in range(rows)], "caption": [name] * rows})


@pytest.mark.parametrize("weights, counts", [([1, 1], [8, 8]), ([2, 1], [10, 5]), ([1, 4], [2, 8])])
def test_mix_keeps_the_proportions_with_the_most_rows_and_no_repeats(weights, counts):
    mixed, taken = curation.mix([_numbered("a", 10), _numbered("b", 8)], weights, seed=3)
    assert taken == counts
    assert [(mixed["caption"] == name).sum() for name in "ab"] == counts
    assert mixed["video"].is_unique
    again, _ = curation.mix([_numbered("a", 10), _numbered("b", 8)], weights, seed=3)
    pd.testing.assert_frame_equal(mixed, again)
    other, _ = curation.mix([_numbered("a", 10), _numbered("b", 8)], weights, seed=4)
    assert set(other["video"]) != set(mixed["video"])


def test_mix_refuses_bad_weights():
    with pytest.raises(ValueError, match="a weight for each"):
        curation.mix([_numbered("a", 2), _numbered("b", 2)], [1])
    with pytest.raises(ValueError, match="positive numbers"):
        curation.mix([_numbered("a", 2), _numbered("b", 2)], [1, 0])


def test_the_mix_tool_rewrites_every_file_path_to_resolve_from_the_output(tool, tmp_path, capsys):
    """Paired and cross-paired personalization rows from two folders: every mixed row's video and reference image
    resolve to the files they named, from the output's folder."""
    for name in ("paired", "cross"):
        folder = tmp_path / name
        (folder / "videos").mkdir(parents=True)
        rows = []
        for i in range(3):
            (folder / "videos" / f"{i}.mp4").write_text(f"{name} video {i}")
            (folder / "videos" / f"{i}.png").write_text(f"{name} reference {i}")
            rows.append((f"videos/{i}.mp4", "the object moving left, 8 fps", f"videos/{i}.png", name))
        pd.DataFrame(rows, columns=["video", "caption", "reference_image", "pairing"]).to_csv(folder / "t.csv",
                                                                                             index=False)
    output = tmp_path / "sft" / "mix.csv"
    output.parent.mkdir()
    argv = ["mix", "--csvs", f"[{tmp_path / 'paired' / 't.csv'}, {tmp_path / 'cross' / 't.csv'}]",
            "--output", str(output)]
    report = tool.main(argv)
    assert list(report["rows_out"].values()) == [3, 3]
    mixed = pd.read_csv(output)
    for _, row in mixed.iterrows():
        assert (output.parent / row["video"]).read_text().startswith(row["pairing"] + " video")
        assert (output.parent / row["reference_image"]).read_text().startswith(row["pairing"] + " reference")
    assert "--overwrite true" in _run_error(tool, argv, capsys)
    assert "CSV file not found" in _run_error(tool, ["mix", "--csvs", f"[{tmp_path / 'no.csv'}, {output}]",
                                                     "--output", str(tmp_path / "o.csv")], capsys)
    assert "a weight for each" in _run_error(tool, [*argv[:3], "--weights", "[1, 1, 1]", "--output",
                                                    str(tmp_path / "o.csv")], capsys)
    assert not (tmp_path / "o.csv").exists()
