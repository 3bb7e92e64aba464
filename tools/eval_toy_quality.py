"""Visual quality in the toy world, model against model: each model generates videos for the held-out (and some seen)
combinations; the pixels say how sharp the shape's edges are, how flat the background is, whether squares have
corners and how steady the colour stays (mg.data.toy_quality), and whether colour, shape and direction follow the
prompt (mg.data.toy_world). Clean renders of the same captions, and the same renders through the TAE (the most a
model working through it can reach), are measured alongside.

    python tools/eval_toy_quality.py --config configs/inference/toy.yaml --csv runs/toy/data/heldout.csv \
        --seen_csv runs/toy/data/train.csv --models '{before: checkpoints/toy/dit_stage2.safetensors, \
        sft: runs/toy/dit_stage4_sft_s0/ckpt}' [--num_seeds 4] --output_path runs/toy/eval_quality

Writes eval_toy_quality.json (per video) and eval_toy_quality.md (the table) into output_path (numbered, never
replaced) and prints the table. Goals (issue: stage 4): edge sharpness >= 2x the stage-2 model's, squares recognised
by their corners >= 80%, adherence on held-out combinations no lower than the stage-2 model's.
"""
import logging
from pathlib import Path
from typing import Optional

import mg  # noqa: F401  (quiet logging before mindspore loads)
import numpy as np
from jsonargparse import ActionConfigFile, ArgumentParser
from mindspore import Tensor

from mg.data.toy_edit_data import toy_world_params
from mg.data.toy_quality import QUALITY_MEASURES, measure_quality
from mg.data.toy_world import ATTRIBUTES, adherence, classify, dataset_clip, read_combos, render
from mg.data.transforms import to_model_range
from mg.models.tae.media import to_uint8_frames
from mg.pipelines import load_pipeline
from mg.pipelines.cli import add_models_argument, add_sampling_arguments, compared_models, sample_options
from mg.pipelines.outputs import save_report, save_video

_logger = logging.getLogger("eval_toy_quality")
CLEAN = "clean renders"
THROUGH_TAE = "clean renders through the TAE"


def measure(frames, row, model, group, **extra):
    """One video's record: the prompt's attributes, those read from the pixels, and the quality measures."""
    predicted = classify(frames)
    return {"model": model, "group": group, "caption": row["caption"], **{a: row[a] for a in ATTRIBUTES},
            **{f"pred_{a}": predicted[a] for a in ATTRIBUTES}, **measure_quality(frames), **extra}


def clean_renders(groups, num_seeds):
    """[(group, row, frames)]: `num_seeds` clean renders per combination, drawn as the toy dataset draws its clips
    (toy_world.json beside the CSV), so they show what a perfect model would make for the caption."""
    out = []
    for group, combos in groups.items():
        for _, row in combos.iterrows():
            params = toy_world_params(row["csv_folder"])
            for k in range(num_seeds):
                clip = dataset_clip(params["seed"], row["colour"], row["shape"], row["direction"], k,
                                    params["height"], params["width"], params["num_frames"], params["shape_size"],
                                    params["position_jitter"])
                out.append((group, row, render(clip, params["height"], params["width"], params["num_frames"])))
    return out


def through_tae(tae, frames):
    latent = tae.encode(Tensor(to_model_range(frames)[None]))[0]
    return to_uint8_frames(np.clip(tae.decode(latent, len(frames)).asnumpy()[0], -1, 1))


def generated(pipeline, name, groups, sample, num_seeds, save_to=None, output=None):
    """Records of the videos `pipeline` makes for every combination and seed."""
    records = []
    for group, combos in groups.items():
        for seed in range(sample["seed"], sample["seed"] + num_seeds):
            for result in pipeline.generate(combos["caption"].tolist(), **{**sample, "seed": seed}):
                for prompt, video in zip(result.prompts, result.videos):
                    row = combos[combos["caption"] == prompt].iloc[0]
                    records.append(measure(to_uint8_frames(video), row, name, group, seed=seed))
                    if save_to is not None:
                        save_video(Path(save_to) / name, prompt, seed, video, sample["fps"], output.formats,
                                   overwrite=output.overwrite)
    return records


def summarise(records):
    """Per (model, group): video count, medians of the quality measures, the share of squares and of all shapes
    that the corner classifier recognises, and adherence."""
    rows = {}
    for key in dict.fromkeys((r["model"], r["group"]) for r in records):
        mine = [r for r in records if (r["model"], r["group"]) == key]
        squares = [r["corner_shape"] == "square" for r in mine if r["shape"] == "square"]
        rows[key] = {"videos": len(mine), **{m: float(np.nanmedian([r[m] for r in mine])) for m in QUALITY_MEASURES},
                     "squares_by_corners": float(np.mean(squares)) if squares else float("nan"),
                     "shapes_by_corners": float(np.mean([r["corner_shape"] == r["shape"] for r in mine])),
                     **adherence(mine)}
    return rows


def report(records):
    """Markdown table of `summarise` (edge sharpness also as a multiple of the clean renders'), and the rows."""
    rows = summarise(records)
    clean = [v["edge_sharpness"] for (model, _), v in rows.items() if model == CLEAN]
    lines = ["| model | group | videos | edge sharpness | x clean | background spread | colour drift | squares by "
             "corners | shapes by corners | colour | shape (fill) | direction |", "|---" * 12 + "|"]
    for (model, group), v in rows.items():
        ratio = f"{v['edge_sharpness'] / np.mean(clean):.2f}" if clean else ""
        squares = "" if np.isnan(v["squares_by_corners"]) else f"{100 * v['squares_by_corners']:.0f}%"
        lines.append(f"| {model} | {group} | {v['videos']} | {v['edge_sharpness']:.3f} | {ratio} | "
                     f"{v['background_spread']:.2f} | {v['colour_drift']:.2f} | {squares} | "
                     f"{100 * v['shapes_by_corners']:.0f}% | " + " | ".join(
                         f"{100 * v[a]:.0f}%" for a in ATTRIBUTES) + " |")
    return "\n".join(lines), {f"{model} / {group}": v for (model, group), v in rows.items()}


def build_parser():
    parser = ArgumentParser(description=__doc__.split("\n")[0], prog="eval_toy_quality.py")
    parser.add_argument("--config", action=ActionConfigFile, help="an inference YAML (configs/inference/toy.yaml)")
    parser.add_argument("--csv", type=str, required=True, help="toy CSV whose combinations are evaluated (held out)")
    parser.add_argument("--seen_csv", type=Optional[str], default=None, help="also evaluate combinations of this CSV")
    parser.add_argument("--seen_combos", type=int, default=8, help="how many combinations of --seen_csv")
    add_models_argument(parser)
    parser.add_argument("--num_seeds", type=int, default=4, help="videos per combination and model")
    parser.add_argument("--save_videos", type=bool, default=False, help="write the generated videos too (output.*)")
    parser.add_argument("--output_path", type=str, default="eval_toy_quality")
    add_sampling_arguments(parser)
    return parser


def main(argv=None):
    parser = build_parser()
    cfg = parser.parse_args(argv)
    sample = sample_options(cfg, progress=False)
    if cfg.num_seeds < 1:
        parser.error(f"--num_seeds must be >= 1, got {cfg.num_seeds}")
    checkpoints, model = compared_models(parser, cfg)
    groups = {"held-out": read_combos(cfg.csv)[0]}
    if cfg.seen_csv:
        groups["seen"] = read_combos(cfg.seen_csv, cfg.seen_combos, sample["seed"])[0]
    out = Path(cfg.output_path)
    records, tae = [], None
    for name, checkpoint in checkpoints.items():
        _logger.info("%s: %s", name, checkpoint)
        pipeline = load_pipeline(dit_checkpoint=checkpoint, **model)
        tae = pipeline.tae
        records += generated(pipeline, name, groups, sample, cfg.num_seeds,
                             out / "videos" if cfg.save_videos else None, cfg.output)
    for group, row, frames in clean_renders(groups, cfg.num_seeds):
        records += [measure(frames, row, CLEAN, group), measure(through_tae(tae, frames), row, THROUGH_TAE, group)]
    table, rates = report(records)
    save_report(out, "eval_toy_quality", table, rates, records)
    return rates


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    main()
