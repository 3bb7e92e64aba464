"""Write the toy editing model's training data, one stage at a time (Movie Gen Edit's recipe: docs/editing.md), into a
toy dataset folder (tools/make_toy_dataset.py), as edit-training CSVs (mg.data.table: `source_video`, `task`).

    python tools/make_toy_edit_data.py stage1 --data_folder runs/toy/data        # edit_stage1.csv
    python tools/make_toy_edit_data.py stage2 --data_folder runs/toy/data        # edit_stage2.csv
    python tools/make_toy_edit_data.py stage3 --data_folder runs/toy/data \
        --config configs/train/toy_edit_backtranslate.yaml \
        --model.dit_checkpoint runs/toy/dit_edit_stage2/model.safetensors       # edit_stage3.csv
    python tools/make_toy_edit_data.py tae --data_folder runs/toy/data           # edit_tae.csv

stage1: image-edit pairs (stills before and after each edit) and the training videos as text-to-video rows.
stage2: adds animated-frame pairs (image pairs moved by one random affine path) and instruction-guided segmentation
        of the training videos to stage 1's rows.
stage3: backtranslation: the stage-II model edits training videos; outputs the toy classifiers accept (the edit
        shows, the object keeps its direction and path) become inputs of the inverse instruction with the real video
        as the target; added to stage 2's rows.
tae:    not edits: the training videos and each training combination in every scene an edit can leave (white
        background, the added square, the shape removed or marked), for the toy TAE's decoder to learn to draw.
Every file a CSV names must then be cached (tools/cache_tae_latents.py, tools/cache_text_embeddings.py), as
scripts/train_toy_edit.sh does.
"""
import json
import logging
from pathlib import Path

import mg  # noqa: F401  (quiet logging before mindspore loads)
import numpy as np
import pandas as pd
from jsonargparse import ActionConfigFile, ArgumentParser

from mg.data.toy_edit_data import (text_to_video_rows, toy_world_params, write_animated_edits, write_edit_csv,
                                   write_image_edits, write_marked, write_scene_videos)

_logger = logging.getLogger("make_toy_edit_data")
# The edits backtranslation asks of the stage-II model (each has an inverse the toy vocabulary says).
BACKTRANSLATED = ("colour", "shape", "background", "add")


def _previous_rows(folder, stage):
    path = Path(folder) / f"edit_stage{stage}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: write stage {stage} first")
    return pd.read_csv(path, dtype=str, keep_default_na=False).to_dict("records")


def backtranslate(folder, pipeline, sample, videos_per_combo, min_path_error):
    """Rows of accepted backtranslations: for `videos_per_combo` training videos of each combination, the
    BACKTRANSLATED edits made by `pipeline`, kept when the toy classifiers accept them."""
    from mg.data.toy_edits import Scene, judge, measured_edits
    from mg.data.toy_world import ToyClip
    from mg.data.video_io import probe, read_frames
    from mg.models.tae.media import to_uint8_frames, write_video
    from mg.pipelines.given import EditOptions

    folder = Path(folder)
    table = pd.read_csv(folder / "train.csv", dtype=str, keep_default_na=False)
    videos = table[table["direction"] != ""].groupby(["colour", "shape", "direction"]).head(videos_per_combo)
    rows, tried = [], 0
    for record in videos.to_dict("records"):
        path = str(folder / record["video"])
        source = read_frames(path, np.arange(probe(path).num_frames))
        scene = Scene(ToyClip(record["colour"], record["shape"], record["direction"], 0, 0, 0, 0))
        edits = [e for e in measured_edits(record["colour"], record["shape"]) if e.kind in BACKTRANSLATED]
        result = pipeline([e.instruction for e in edits], **sample, edit=EditOptions(video=path))
        for edit, video in zip(edits, result.videos):
            tried += 1
            output = to_uint8_frames(video)
            verdict = judge(edit, source, output)
            if not (verdict["success"] and verdict.get("direction_kept", True)
                    and verdict.get("path_error_px", 0.0) <= min_path_error):
                continue
            inverse = edit.inverse(scene)
            made = f"edits/backtranslated/{Path(record['video']).stem}_{edit.kind}.mp4"
            write_video(folder / made, output, float(record["fps"]))
            rows.append(dict(video=record["video"], caption=inverse.instruction, fps=record["fps"],
                             frames=record["frames"], height=record["height"], width=record["width"],
                             source_video=made, task=inverse.task))
    _logger.info("backtranslation: %d of %d edits accepted", len(rows), tried)
    return rows, tried


def build_parser():
    from mg.pipelines.cli import add_sampling_arguments

    stages = {}
    for stage in ("stage1", "stage2", "stage3", "tae"):
        stages[stage] = ArgumentParser(description=f"write edit_{stage}.csv")
        stages[stage].add_argument("--data_folder", type=str, required=True, help="the toy dataset's folder")
        if stage != "stage3":  # stage 3 samples with sample.seed
            stages[stage].add_argument("--seed", type=int, default=0, help="of the stills, scenes and paths")
    stages["stage1"].add_argument("--stills_per_pair", type=int, default=6,
                                  help="stills per (colour, shape), each edited every way it can be")
    stages["stage2"].add_argument("--animated", type=int, default=480, help="animated-frame pairs")
    stage3 = stages["stage3"]
    stage3.add_argument("--config", action=ActionConfigFile, help="an inference YAML (configs/inference/toy.yaml)")
    stage3.add_argument("--videos_per_combo", type=int, default=2, help="training videos edited per combination")
    stage3.add_argument("--max_path_error", type=float, default=2.0,
                        help="pixels the edited object may stray from the real one's path and still be kept")
    add_sampling_arguments(stage3, outputs=False)
    parser = ArgumentParser(description=__doc__.split("\n")[0], prog="make_toy_edit_data.py")
    commands = parser.add_subcommands()
    for name, sub in stages.items():
        commands.add_subcommand(name, sub)
    return parser


def main(argv=None):
    parser = build_parser()
    cfg = parser.parse_args(argv)
    stage = cfg.subcommand
    cfg = cfg[stage]
    folder = Path(cfg.data_folder)
    output = folder / f"edit_{stage}.csv"
    try:
        toy_world_params(folder)
        if output.exists():
            raise FileExistsError(f"{output} exists; remove it to write {stage} again")
    except (FileNotFoundError, FileExistsError) as err:
        parser.error(str(err))
    report = {}
    if stage == "stage1":
        rows = write_image_edits(folder, cfg.seed, cfg.stills_per_pair) + text_to_video_rows(folder / "train.csv")
    elif stage == "tae":
        rows = text_to_video_rows(folder / "train.csv") + write_scene_videos(folder, cfg.seed)
    elif stage == "stage2":
        rows = (_previous_rows(folder, 1) + write_animated_edits(folder, cfg.seed, cfg.animated)
                + write_marked(folder, folder / "train.csv"))
    else:
        from mg.pipelines import load_pipeline
        from mg.pipelines.cli import sample_options
        pipeline = load_pipeline(**dict(cfg.model))
        made, tried = backtranslate(folder, pipeline, sample_options(cfg, progress=False),
                                    cfg.videos_per_combo, cfg.max_path_error)
        report = {"backtranslation_tried": tried, "backtranslation_accepted": len(made)}
        rows = _previous_rows(folder, 2) + made
    count = write_edit_csv(output, rows)
    report.update(rows=count, tasks=pd.Series([r["task"] for r in rows]).value_counts().to_dict())
    _logger.info("wrote %s: %s", output, json.dumps(report))
    return report


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    main()
