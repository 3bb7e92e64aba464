"""Editing in the toy world, measured: each model edits held-out toy videos (combinations never trained on) with one
edit of each kind a toy user asks for (mg.data.toy_edits.measured_edits: another colour, another shape, a white
background, removing the shape, adding a red square); the toy classifiers say whether the edit shows, and pixel
measures whether what must not change stayed (the object's direction and path, the background away from it).

    python tools/eval_toy_edits.py --config configs/inference/toy.yaml --csv runs/toy/data/heldout.csv \
        --models '{"stage I": runs/toy/dit_edit_stage1/ckpt, "stage III": checkpoints/toy/dit_edit.safetensors}' \
        [--per_frame_model runs/toy/dit_edit_stage1/ckpt] [--videos_per_combo 2] --output_path runs/toy/eval_edits

--per_frame_model adds the baseline that edits every frame on its own as an image (the same seed for every frame);
--tae_ceiling adds the perfect edits (each video's scene rendered after the edit) through the pipeline's TAE: the
most a model working through that TAE can score.
Writes eval_toy_edits.json (per edit) and eval_toy_edits.md (the table) into output_path (numbered, never replaced)
and prints the table. Goals: colour and background edits >= 90% with the path kept to <= 2 px median error, shape
edits >= 75%.
"""
import logging
from pathlib import Path
from typing import Dict, Optional

import mg  # noqa: F401  (quiet logging before mindspore loads)
import cv2
import numpy as np
import pandas as pd
from jsonargparse import ActionConfigFile, ArgumentParser
from mindspore import Tensor

from mg.data.toy_edit_data import toy_world_params
from mg.data.toy_edits import MEASURED_KINDS, Scene, judge, measured_edits, render_scene
from mg.data.toy_world import dataset_clip
from mg.data.transforms import to_model_range
from mg.data.video_io import probe, read_frames
from mg.models.tae.media import to_uint8_frames
from mg.pipelines import load_pipeline
from mg.pipelines.cli import add_sampling_arguments, sample_options
from mg.pipelines.given import EditOptions
from mg.pipelines.outputs import save_report, save_video

_logger = logging.getLogger("eval_toy_edits")
PER_FRAME = "per-frame image edits"
CEILING = "rendered edits through the TAE"


def held_out_videos(csv_path, videos_per_combo):
    """The first `videos_per_combo` videos of each combination of a toy CSV: [(path, colour, shape, direction)]
    (the file names say which clip of its combination each is: <colour>_<shape>_<direction>_<k>.mp4)."""
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    missing = [c for c in ("video", "colour", "shape", "direction") if c not in table.columns]
    if missing:
        raise ValueError(f"{csv_path}: not a toy-world CSV (missing columns {missing}); "
                         "write it with tools/make_toy_dataset.py")
    videos = table[table["direction"] != ""].groupby(["colour", "shape", "direction"]).head(videos_per_combo)
    folder = Path(csv_path).parent
    return [(str(folder / r["video"]), r["colour"], r["shape"], r["direction"]) for r in videos.to_dict("records")]


def edit_video(pipeline, path, instructions, sample):
    """uint8 (T, H, W, 3) results of each instruction applied to the video at `path`."""
    result = pipeline(instructions, **sample, edit=EditOptions(video=path))
    return [to_uint8_frames(video) for video in result.videos]


def edit_frames_apart(pipeline, path, instructions, sample, scratch):
    """The baseline: every frame of the video edited on its own as a one-frame video (an image edit)."""
    frames = read_frames(path, np.arange(sample["num_frames"]))
    edited = [[] for _ in instructions]
    for i, frame in enumerate(frames):
        image = Path(scratch) / f"{Path(path).stem}_{i:03d}.png"
        cv2.imwrite(str(image), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        for k, video in enumerate(edit_video(pipeline, str(image), instructions, {**sample, "num_frames": 1})):
            edited[k].append(video[0])
    return [np.stack(frames_k) for frames_k in edited]


def rendered_edits(tae, path, colour, shape, direction, edits):
    """The perfect edits of a toy dataset's video (its clip re-drawn from toy_world.json), encoded and decoded by
    `tae`."""
    params = toy_world_params(Path(path).parents[1])
    k = int(Path(path).stem.rsplit("_", 1)[1])
    clip = dataset_clip(params["seed"], colour, shape, direction, k, params["height"], params["width"],
                        params["num_frames"], params["shape_size"], params["position_jitter"])
    outputs = []
    for edit in edits:
        frames = render_scene(edit.apply(Scene(clip)), params["height"], params["width"], params["num_frames"])
        latent = tae.encode(Tensor(to_model_range(frames)[None]))[0]
        outputs.append(to_uint8_frames(np.clip(tae.decode(latent, len(frames)).asnumpy()[0], -1, 1)))
    return outputs


def evaluate(pipeline, name, videos, sample, per_frame=False, scratch=None, save_to=None, output=None):
    """Judge `pipeline`'s edits of `videos` (or, for CEILING, its TAE's rendering of perfect ones); `save_to`: a
    folder to write the edited videos into (OutputOptions `output`)."""
    records = []
    for path, colour, shape, direction in videos:
        source = read_frames(path, np.arange(min(probe(path).num_frames, sample["num_frames"])))
        edits = measured_edits(colour, shape)
        instructions = [edit.instruction for edit in edits]
        if name == CEILING:
            outputs = rendered_edits(pipeline.tae, path, colour, shape, direction, edits)
        elif per_frame:
            outputs = edit_frames_apart(pipeline, path, instructions, sample, scratch)
        else:
            outputs = edit_video(pipeline, path, instructions, sample)
        for edit, edited in zip(edits, outputs):
            records.append({"model": name, "video": path, "direction": direction, "kind": edit.kind,
                            "instruction": edit.instruction, **judge(edit, source, edited)})
            if save_to is not None:
                save_video(Path(save_to) / name.replace(" ", "_"), f"{Path(path).stem} {edit.instruction}",
                           sample["seed"], to_model_range(edited), sample["fps"], output.formats,
                           overwrite=output.overwrite)
    return records


def _summary(records):
    """Per kind success rates, and the preservation measures over the edits that keep the object."""
    rates = {kind: float(np.mean([r["success"] for r in records if r["kind"] == kind])) for kind in MEASURED_KINDS}
    rates["all"] = float(np.mean([r["success"] for r in records]))
    kept = [r for r in records if "direction_kept" in r]
    rates["direction_kept"] = float(np.mean([r["direction_kept"] for r in kept]))
    paths = [r["path_error_px"] for r in kept if np.isfinite(r["path_error_px"])]
    rates["path_error_px_median"] = float(np.median(paths)) if paths else float("nan")
    changes = [r["background_change"] for r in records if np.isfinite(r.get("background_change", np.nan))]
    rates["background_change_mean"] = float(np.mean(changes)) if changes else float("nan")
    return rates


def report(records):
    """Markdown table per model (in the order evaluated), and the rates."""
    rates = {m: _summary([r for r in records if r["model"] == m]) for m in dict.fromkeys(r["model"] for r in records)}
    lines = ["| model | edits | " + " | ".join(MEASURED_KINDS) + " | all | direction kept | path error, median px | "
             "background change, mean (0-255) |", "|---" * (len(MEASURED_KINDS) + 6) + "|"]
    for model, rate in rates.items():
        count = sum(r["model"] == model for r in records)
        cells = " | ".join(f"{100 * rate[k]:.0f}%" for k in MEASURED_KINDS + ("all", "direction_kept"))
        lines.append(f"| {model} | {count} | {cells} | {rate['path_error_px_median']:.2f} | "
                     f"{rate['background_change_mean']:.1f} |")
    return "\n".join(lines), rates


def build_parser():
    parser = ArgumentParser(description=__doc__.split("\n")[0], prog="eval_toy_edits.py")
    parser.add_argument("--config", action=ActionConfigFile, help="an inference YAML (configs/inference/toy.yaml)")
    parser.add_argument("--csv", type=str, required=True, help="toy CSV whose videos are edited (held-out ones)")
    parser.add_argument("--models", type=Optional[Dict[str, str]], default=None,
                        help="{name: editing transformer checkpoint}, evaluated in this order (default: "
                             "model.dit_checkpoint alone)")
    parser.add_argument("--per_frame_model", type=Optional[str], default=None,
                        help="also the baseline: this model edits each frame apart, as an image")
    parser.add_argument("--tae_ceiling", type=bool, default=False,
                        help="also the perfect edits through the TAE (needs the toy dataset's toy_world.json)")
    parser.add_argument("--videos_per_combo", type=int, default=2, help="held-out videos edited per combination")
    parser.add_argument("--save_videos", type=bool, default=False, help="write the edited videos too (output.*)")
    parser.add_argument("--output_path", type=str, default="eval_toy_edits")
    add_sampling_arguments(parser)
    return parser


def main(argv=None):
    parser = build_parser()
    cfg = parser.parse_args(argv)
    sample = sample_options(cfg, progress=False)
    if cfg.videos_per_combo < 1:
        parser.error(f"--videos_per_combo must be >= 1, got {cfg.videos_per_combo}")
    model = dict(cfg.model)
    checkpoints = dict(cfg.models or {"model": model.pop("dit_checkpoint")})
    model.pop("dit_checkpoint", None)
    if cfg.per_frame_model:
        checkpoints[PER_FRAME] = cfg.per_frame_model
    if cfg.tae_ceiling:  # any of the models brings the TAE
        checkpoints[CEILING] = next(iter(checkpoints.values()))
    missing = [path for path in checkpoints.values() if not Path(path).exists()
               and not Path(path).with_suffix(".safetensors").exists()]
    if missing:
        parser.error(f"no such checkpoint: {missing}")
    videos = held_out_videos(cfg.csv, cfg.videos_per_combo)
    out = Path(cfg.output_path)
    scratch = out / "frames"
    scratch.mkdir(parents=True, exist_ok=True)
    records = []
    for name, checkpoint in checkpoints.items():
        _logger.info("%s: %s", name, checkpoint)
        pipeline = load_pipeline(dit_checkpoint=checkpoint, **model)
        records += evaluate(pipeline, name, videos, sample, per_frame=name == PER_FRAME, scratch=scratch,
                            save_to=out / "videos" if cfg.save_videos else None, output=cfg.output)
    table, rates = report(records)
    save_report(out, "eval_toy_edits", table, rates, records)
    return rates


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    main()
