"""Prompt adherence in the toy world: generate videos for the combinations of a toy CSV (by default the held-out
ones), read colour, shape and motion direction back from the pixels, and report how often they match the prompt.

    python tools/eval_toy.py generate --config configs/inference/toy.yaml --csv data/toy/heldout.csv \
        --output_path out/eval_toy [--num_seeds 4] [--seen_csv data/toy/train.csv --seen_combos 8] [--save_videos true]
    # sanity check of the pixel classifiers on the dataset's own videos (no model needed):
    python tools/eval_toy.py dataset --csv data/toy/train.csv --output_path out/eval_toy_data

Writes eval_toy.json (per video and rates) and eval_toy.md (table) into output_path (numbered, never replaced) and
prints the table. Target: >= 90% colour and direction adherence on held-out combinations.
"""
import json
import logging
from pathlib import Path
from typing import Optional

import mg  # noqa: F401  (quiet logging before mindspore loads)
import numpy as np
import pandas as pd
from jsonargparse import ActionConfigFile, ArgumentParser

from mg.data.toy_world import ATTRIBUTES, adherence, classify
from mg.data.video_io import probe, read_frames
from mg.models.tae.media import to_uint8_frames
from mg.pipelines import load_pipeline
from mg.pipelines.outputs import OutputOptions, free_stem, save_video
from mg.pipelines.text_to_video import MovieGenPipeline, check_options

_logger = logging.getLogger("eval_toy")


def read_combos(csv_path, limit=None, seed=0):
    """Distinct (colour, shape, direction) video rows of a toy CSV with a caption each (images are skipped);
    `limit` picks that many at random (seeded)."""
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    missing = [c for c in ("video", "caption") + ATTRIBUTES if c not in table.columns]
    if missing:
        raise ValueError(f"{csv_path}: not a toy-world CSV (missing columns {missing}); "
                         "write it with tools/make_toy_dataset.py")
    videos = table[table["direction"] != ""]
    combos = videos.drop_duplicates(list(ATTRIBUTES)).reset_index(drop=True)
    if limit is not None and limit < len(combos):
        combos = combos.iloc[np.sort(np.random.default_rng(seed).choice(len(combos), limit, replace=False))]
    return combos, videos


def _record(row, group, frames, **extra):
    predicted = classify(frames)
    return {"group": group, "caption": row["caption"], **{a: row[a] for a in ATTRIBUTES},
            **{f"pred_{a}": predicted[a] for a in ATTRIBUTES}, **extra}


def evaluate_dataset(csv_path):
    """Classify the CSV's own video files (ground truth): measures the classifiers, not a model."""
    _, videos = read_combos(csv_path)
    folder = Path(csv_path).parent
    records = []
    for _, row in videos.iterrows():
        path = str(folder / row["video"])
        records.append(_record(row, "dataset", read_frames(path, np.arange(probe(path).num_frames)), video=path))
    return records


def evaluate_model(pipeline, groups, sample, num_seeds, output_path, output, save_videos):
    records = []
    for group, combos in groups.items():
        csv_fps = {float(f) for f in combos["fps"] if f}
        if csv_fps and csv_fps != {float(sample["fps"])}:
            _logger.warning("%s clips are at %s fps but sample.fps is %s: the FPS-<n> prefix differs from training",
                            group, sorted(csv_fps), sample["fps"])
        prompts = combos["caption"].tolist()
        for seed in range(sample["seed"], sample["seed"] + num_seeds):
            for result in pipeline.generate(prompts, **{**sample, "seed": seed}):
                for prompt, video in zip(result.prompts, result.videos):
                    row = combos[combos["caption"] == prompt].iloc[0]
                    records.append(_record(row, group, to_uint8_frames(video), seed=seed))
                    if save_videos:
                        save_video(Path(output_path) / "videos", prompt, seed, video, sample["fps"], output.formats,
                                   overwrite=output.overwrite)
    return records


def report(records):
    """Markdown table of adherence rates per group, and the rates as a dict."""
    rates = {g: adherence([r for r in records if r["group"] == g]) for g in dict.fromkeys(r["group"] for r in records)}
    lines = ["| group | videos | colour | shape | direction | all three |", "|---|---|---|---|---|---|"]
    for group, rate in rates.items():
        count = sum(r["group"] == group for r in records)
        cells = " | ".join(f"{100 * rate[k]:.1f}%" for k in ATTRIBUTES + ("all",))
        lines.append(f"| {group} | {count} | {cells} |")
    return "\n".join(lines), rates


def build_parser():
    generate = ArgumentParser(description="generate videos and measure their adherence")
    generate.add_argument("--config", action=ActionConfigFile, help="an inference YAML (configs/inference/toy.yaml)")
    generate.add_argument("--csv", type=str, required=True, help="toy CSV whose combinations are evaluated")
    generate.add_argument("--seen_csv", type=Optional[str], default=None, help="also evaluate combinations of this CSV")
    generate.add_argument("--seen_combos", type=int, default=8, help="how many combinations of --seen_csv")
    generate.add_argument("--num_seeds", type=int, default=4, help="videos per combination (seeds sample.seed, +1..)")
    generate.add_argument("--save_videos", type=bool, default=False, help="write the generated videos too")
    generate.add_argument("--output_path", type=str, default="eval_toy")
    generate.add_function_arguments(load_pipeline, "model")
    generate.add_method_arguments(MovieGenPipeline, "generate", "sample", skip={"prompts", "progress", "decode"})
    generate.add_class_arguments(OutputOptions, "output")
    dataset = ArgumentParser(description="classify the CSV's own videos (checks the classifiers, needs no model)")
    dataset.add_argument("--csv", type=str, required=True, help="toy CSV")
    dataset.add_argument("--output_path", type=str, default="eval_toy")
    parser = ArgumentParser(description=__doc__.split("\n")[0], prog="eval_toy.py")
    commands = parser.add_subcommands()
    commands.add_subcommand("generate", generate)
    commands.add_subcommand("dataset", dataset)
    return parser


def main(argv=None):
    parser = build_parser()
    cfg = parser.parse_args(argv)
    command = cfg.subcommand
    cfg = cfg[command]
    if command == "dataset":
        records = evaluate_dataset(cfg.csv)
    else:
        if cfg.num_seeds < 1:
            parser.error(f"--num_seeds must be >= 1, got {cfg.num_seeds}")
        sample = dict(cfg.sample)
        check_options(sample["num_frames"], sample["fps"], sample["num_steps"], sample["schedule"],
                      sample["guidance_scale"], sample["batch_size"])
        groups = {"held-out": read_combos(cfg.csv)[0]}
        if cfg.seen_csv:
            groups["seen"] = read_combos(cfg.seen_csv, cfg.seen_combos, sample["seed"])[0]
        pipeline = load_pipeline(**dict(cfg.model))
        records = evaluate_model(pipeline, groups, sample, cfg.num_seeds, cfg.output_path, cfg.output,
                                 cfg.save_videos)
    table, rates = report(records)
    out = Path(cfg.output_path)
    out.mkdir(parents=True, exist_ok=True)
    stem = free_stem(out, "eval_toy", [".json", ".md"], overwrite=False)
    (out / f"{stem}.json").write_text(json.dumps({"rates": rates, "records": records}, indent=1))
    (out / f"{stem}.md").write_text(table + "\n")
    print(table)
    _logger.info("wrote %s/%s.json and .md", out, stem)
    return rates


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    main()
