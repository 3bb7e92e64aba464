"""Prompt adherence in the toy world: generate videos for the combinations of a toy CSV (by default the held-out
ones), read colour, shape and motion direction back from the pixels, and report how often they match the prompt.

    python tools/eval_toy.py generate --config configs/inference/toy.yaml --csv data/toy/heldout.csv \
        --output_path out/eval_toy [--num_seeds 4] [--seen_csv data/toy/train.csv --seen_combos 8] [--save_videos true]
    # a conditioned model, given each combination's own held-out clip: its first frame (image-to-video) or its first
    # latent frame's worth of frames (continuation); direction is then read from the frames the model made, and the
    # PSNR of the given frames is reported
    python tools/eval_toy.py generate ... --given image|continuation [--keep_given false]
    # sanity check of the pixel classifiers on the dataset's own videos (no model needed):
    python tools/eval_toy.py dataset --csv data/toy/train.csv --output_path out/eval_toy_data

Writes eval_toy.json (per video and rates) and eval_toy.md (table) into output_path (numbered, never replaced) and
prints the table. Target: >= 90% colour and direction adherence on held-out combinations.
"""
import logging
from pathlib import Path
from typing import Literal, Optional

import mg  # noqa: F401  (quiet logging before mindspore loads)
import cv2
import numpy as np
from jsonargparse import ActionConfigFile, ArgumentParser
from mindspore import Tensor

from mg.data.toy_world import ATTRIBUTES, adherence, classify, read_combos
from mg.data.transforms import to_model_range
from mg.data.video_io import probe, read_frames
from mg.models.tae.media import to_uint8_frames
from mg.pipelines import load_pipeline
from mg.pipelines.cli import add_sampling_arguments, sample_options
from mg.pipelines.given import GivenOptions
from mg.pipelines.outputs import save_report, save_video

_logger = logging.getLogger("eval_toy")


def _record(row, group, frames, made_from=0, **extra):
    """The prompt's attributes against those read from `frames`; direction from frames[made_from:], the frames the
    model made (the rest were given)."""
    predicted = classify(frames)
    if made_from:
        predicted["direction"] = classify(frames[made_from:])["direction"]
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


def evaluate_model(pipeline, groups, sample, num_seeds, output_path, output, save_videos, given=None, keep_given=True):
    records = []
    for group, combos in groups.items():
        csv_fps = {float(f) for f in combos["fps"] if f}
        if csv_fps and csv_fps != {float(sample["fps"])}:
            _logger.warning("%s clips are at %s fps but sample.fps is %s: the FPS-<n> prefix differs from training",
                            group, sorted(csv_fps), sample["fps"])
        # files and TAE ceilings once, not per seed
        requests = list(_requests(combos, given, pipeline, output_path, keep_given))
        for seed in range(sample["seed"], sample["seed"] + num_seeds):
            for prompts, condition, kept, through_tae in requests:
                for result in pipeline.generate(prompts, **{**sample, "seed": seed}, condition=condition):
                    for prompt, video in zip(result.prompts, result.videos):
                        row = combos[combos["caption"] == prompt].iloc[0]
                        frames = to_uint8_frames(video)
                        extra = {} if kept is None else {
                            "given_psnr": psnr(frames[:len(kept)], kept),
                            "tae_psnr": None if through_tae is None else psnr(through_tae, kept),
                            "after_tae_psnr": None if through_tae is None else psnr(frames[:len(kept)], through_tae)}
                        records.append(_record(row, group, frames, seed=seed, made_from=0 if kept is None
                                               else len(kept), **extra))
                        if save_videos:
                            save_video(Path(output_path) / "videos", prompt, seed, video, sample["fps"],
                                       output.formats, overwrite=output.overwrite)
    return records


def _requests(combos, given, pipeline, output_path, keep_given=True):
    """(prompts, GivenOptions or None, the given frames or None, the TAE's reconstruction of them or None) to make: all
    prompts at once without `given`, else each combination with its own clip's first frame (image) or first latent
    frame of frames (continuation)."""
    if given is None:
        yield combos["caption"].tolist(), None, None, None
        return
    folder = Path(output_path) / "given"
    folder.mkdir(parents=True, exist_ok=True)
    step = pipeline.tae.config.temporal_compression
    for _, row in combos.iterrows():
        clip = str(Path(row["csv_folder"]) / row["video"])
        if given == "image":
            first = read_frames(clip, [0])
            image = folder / f"{Path(row['video']).stem}_first.png"
            cv2.imwrite(str(image), cv2.cvtColor(first[0], cv2.COLOR_RGB2BGR))
            condition, kept = GivenOptions(image=str(image), keep=keep_given), np.repeat(first, step, axis=0)
        else:
            condition, kept = GivenOptions(video=clip, frames=step, keep=keep_given), read_frames(clip, np.arange(step))
        yield [row["caption"]], condition, kept, _through_tae(pipeline, kept)


def _through_tae(pipeline, frames):
    """The TAE's own reconstruction of `frames` (uint8 (T, H, W, 3)): what a model working through it can keep of
    them at best (None for a pipeline without a real TAE)."""
    tae = pipeline.tae
    if not hasattr(tae, "encode"):
        return None
    mean = tae.encode(Tensor(to_model_range(frames)[None]))[0]
    return to_uint8_frames(np.clip(tae.decode(mean, len(frames)).asnumpy()[0], -1, 1))


def psnr(frames, reference):
    """PSNR in dB of uint8 frames against uint8 reference frames of the same shape."""
    error = np.mean((frames.astype(np.float64) - reference.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(error, 1e-10)))


def report(records):
    """Markdown table of adherence rates per group, and the rates as a dict."""
    rates = {g: adherence([r for r in records if r["group"] == g]) for g in dict.fromkeys(r["group"] for r in records)}
    given = any("given_psnr" in r for r in records)
    lines = ["| group | videos | colour | shape | direction | all three |" + (
                 " given frames PSNR, median | against the TAE's reconstruction of them |" if given else ""),
             "|---|---|---|---|---|---|" + ("---|---|" if given else "")]
    for group, rate in rates.items():
        mine = [r for r in records if r["group"] == group]
        cells = " | ".join(f"{100 * rate[k]:.1f}%" for k in ATTRIBUTES + ("all",))
        if given:
            rate["given_psnr_median"] = float(np.median([r["given_psnr"] for r in mine]))
            cells += f" | {rate['given_psnr_median']:.2f} dB"
            ceiling = [r["tae_psnr"] for r in mine if r.get("tae_psnr") is not None]
            if ceiling:
                rate["tae_psnr_median"] = float(np.median(ceiling))
                rate["after_tae_psnr_median"] = float(np.median([r["after_tae_psnr"] for r in mine]))
                cells += f" (TAE alone: {rate['tae_psnr_median']:.2f} dB) | {rate['after_tae_psnr_median']:.2f} dB"
            else:
                cells += " | |"
        lines.append(f"| {group} | {len(mine)} | {cells} |")
    return "\n".join(lines), rates


def build_parser():
    generate = ArgumentParser(description="generate videos and measure their adherence")
    generate.add_argument("--config", action=ActionConfigFile, help="an inference YAML (configs/inference/toy.yaml)")
    generate.add_argument("--csv", type=str, required=True, help="toy CSV whose combinations are evaluated")
    generate.add_argument("--seen_csv", type=Optional[str], default=None, help="also evaluate combinations of this CSV")
    generate.add_argument("--seen_combos", type=int, default=8, help="how many combinations of --seen_csv")
    generate.add_argument("--num_seeds", type=int, default=4, help="videos per combination (seeds sample.seed, +1..)")
    generate.add_argument("--save_videos", type=bool, default=False, help="write the generated videos too")
    generate.add_argument("--given", type=Optional[Literal["image", "continuation"]], default=None,
                          help="a conditioned model: give each combination its own clip's first frame (image) or "
                               "first latent frame of frames (continuation)")
    generate.add_argument("--keep_given", type=bool, default=True,
                          help="with --given: put the given latent back before decoding (inference's "
                               "--condition.keep); false measures the model's own rendering of it")
    generate.add_argument("--output_path", type=str, default="eval_toy")
    add_sampling_arguments(generate)
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
        sample = sample_options(cfg)
        groups = {"held-out": read_combos(cfg.csv)[0]}
        if cfg.seen_csv:
            groups["seen"] = read_combos(cfg.seen_csv, cfg.seen_combos, sample["seed"])[0]
        pipeline = load_pipeline(**dict(cfg.model))
        records = evaluate_model(pipeline, groups, sample, cfg.num_seeds, cfg.output_path, cfg.output,
                                 cfg.save_videos, cfg.given, cfg.keep_given)
    table, rates = report(records)
    save_report(cfg.output_path, "eval_toy", table, rates, records)
    return rates


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    main()
