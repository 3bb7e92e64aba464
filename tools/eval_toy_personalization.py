"""Personalization in the toy world, measured: each model makes a video of every held-out subject (a pattern and
palette never trained on) from a cross-paired reference image (the subject at another place and size) and a prompt
that says only how it moves; the toy classifiers read back whether the video shows that subject (identity: pattern
and palette), moves as asked (direction), and whether its first frame copies the reference's place and size.

    python tools/eval_toy_personalization.py --config configs/inference/toy.yaml \
        --csv runs/toy_subjects/data/heldout.csv \
        --models '{"stage II": runs/toy_subjects/stage2/ckpt, "stage III": checkpoints/toy/dit_personalize.safetensors}' \
        [--videos_per_subject 1] [--tae_ceiling true] --output_path runs/toy_subjects/eval

--tae_ceiling adds the held-out clips themselves through the pipeline's TAE: the most a model working through that
TAE can score on identity. Writes eval_toy_personalization.json (per video) and .md (the table) into output_path
(numbered, never replaced) and prints the table. Goals: identity >= 80%, direction >= 90%, copies well below a
paired-only model's.
"""
import logging
from pathlib import Path

import mg  # noqa: F401  (quiet logging before mindspore loads)
import numpy as np
import pandas as pd
from jsonargparse import ActionConfigFile, ArgumentParser
from mindspore import Tensor

from mg.data.toy_subjects import Subject, copies, identify
from mg.data.toy_world import classify_direction
from mg.data.transforms import to_model_range
from mg.data.video_io import probe, read_frames
from mg.models.tae.media import to_uint8_frames
from mg.pipelines import load_pipeline
from mg.pipelines.cli import add_models_argument, add_sampling_arguments, compared_models, sample_options
from mg.pipelines.outputs import save_report, save_video

_logger = logging.getLogger("eval_toy_personalization")
CEILING = "held-out clips through the TAE"
MEASURES = ("identity", "pattern", "palette", "direction", "copies")


def held_out_rows(csv_path, per_subject):
    """The first `per_subject` rows of each (subject, direction) of a toy subjects CSV, with absolute paths."""
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    missing = [c for c in ("video", "caption", "reference_image", "subject", "direction") if c not in table.columns]
    if missing:
        raise ValueError(f"{csv_path}: not a toy subjects CSV (missing columns {missing}); write it with "
                         "tools/make_toy_subject_data.py")
    table = table[table["direction"] != ""].groupby(["subject", "direction"], sort=False).head(per_subject)
    folder = Path(csv_path).parent
    return table.assign(video=[str(folder / v) for v in table["video"]],
                        reference_image=[str(folder / r) for r in table["reference_image"]]).reset_index(drop=True)


def measure(frames, row, group, **extra):
    """What `frames` (uint8 (T, H, W, 3)) show against what the row asked for."""
    subject, found = Subject.parse(row["subject"]), identify(frames)
    reference = read_frames(row["reference_image"], [0])
    return {"group": group, "subject": row["subject"], "direction": row["direction"],
            "found": None if found is None else found.name,
            "identity": found == subject,
            "pattern": found is not None and found.pattern == subject.pattern,
            "palette": found is not None and (found.first, found.second) == (subject.first, subject.second),
            "pred_direction": classify_direction(frames),
            "copies": bool(copies(frames, reference)), **extra}


def evaluate(pipeline, group, rows, sample, save_to=None, output=None):
    records = []
    for caption, chosen in rows.groupby("caption", sort=False):
        result = pipeline(
            [caption], reference_images=chosen["reference_image"].tolist(), **sample)
        for (_, row), video in zip(chosen.iterrows(), result.videos):
            frames = to_uint8_frames(video)
            records.append(measure(frames, row, group))
            if save_to is not None:
                save_video(save_to, f"{group} {row['subject']} {row['direction']}", sample["seed"], video,
                           sample["fps"], output.formats, overwrite=output.overwrite)
    return records


def evaluate_tae(pipeline, rows):
    """The held-out clips encoded and decoded by the pipeline's TAE (copies: of the clip's own first frame)."""
    tae, records = pipeline.tae, []
    for _, row in rows.iterrows():
        clip = read_frames(row["video"], np.arange(probe(row["video"]).num_frames))
        mean = tae.encode(Tensor(to_model_range(clip)[None]))[0]
        frames = to_uint8_frames(np.clip(tae.decode(mean, len(clip)).asnumpy()[0], -1, 1))
        records.append(measure(frames, row, CEILING))
    return records


def report(records):
    """Markdown table of the rates per group, and the rates as a dict."""
    rates = {}
    for group in dict.fromkeys(r["group"] for r in records):
        mine = [r for r in records if r["group"] == group]
        rates[group] = {m: float(np.mean([r[m] if m != "direction" else r["pred_direction"] == r["direction"]
                                          for r in mine])) for m in MEASURES}
        rates[group]["videos"] = len(mine)
    lines = ["| model | videos | identity (pattern and palette) | pattern | palette | direction | copies the "
             "reference's place and size |", "|---|---|---|---|---|---|---|"]
    for group, rate in rates.items():
        lines.append(f"| {group} | {rate['videos']} | " + " | ".join(f"{100 * rate[m]:.1f}%" for m in MEASURES)
                     + " |")
    return "\n".join(lines), rates


def build_parser():
    parser = ArgumentParser(description=__doc__.split("\n")[0], prog="eval_toy_personalization.py")
    parser.add_argument("--config", action=ActionConfigFile, help="an inference YAML (configs/inference/toy.yaml)")
    parser.add_argument("--csv", type=str, required=True, help="toy subjects CSV of held-out subjects")
    add_models_argument(parser)
    parser.add_argument("--tae_ceiling", type=bool, default=False,
                        help="also measure the held-out clips themselves through the TAE")
    parser.add_argument("--videos_per_subject", type=int, default=1,
                        help="held-out rows per subject and direction")
    parser.add_argument("--save_videos", type=bool, default=False, help="write the generated videos too (output.*)")
    parser.add_argument("--output_path", type=str, default="eval_toy_personalization")
    add_sampling_arguments(parser)
    return parser


def main(argv=None):
    parser = build_parser()
    cfg = parser.parse_args(argv)
    sample = sample_options(cfg, progress=False)
    if cfg.videos_per_subject < 1:
        parser.error(f"--videos_per_subject must be >= 1, got {cfg.videos_per_subject}")
    checkpoints, model = compared_models(parser, cfg)
    try:
        rows = held_out_rows(cfg.csv, cfg.videos_per_subject)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    out = Path(cfg.output_path)
    records = []
    for name, checkpoint in checkpoints.items():
        _logger.info("%s: %s", name, checkpoint)
        pipeline = load_pipeline(dit_checkpoint=checkpoint, **model)
        records += evaluate(pipeline, name, rows, sample, out / "videos" if cfg.save_videos else None, cfg.output)
    if cfg.tae_ceiling:
        records += evaluate_tae(pipeline, rows)
    table, rates = report(records)
    save_report(out, "eval_toy_personalization", table, rates, records)
    return rates


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    main()
