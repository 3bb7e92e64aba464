"""Generate videos (or images, --sample.num_frames 1) from text with a trained Movie Gen model.

    python inference.py --config configs/inference/toy.yaml --prompts "a red circle moving left, 8 fps" \
        --output_path out/ [--prompts_file prompts.txt|.csv] [--sample.seed 1] [--sample.num_steps 50] \
        [--sample.guidance_scale 7.5] [--sample.schedule linear] [--output.formats '[mp4, gif]']

Options: `model.*` are the arguments of mg.pipelines.load_pipeline (checkpoints, text encoders or cached
embeddings), `sample.*` those of MovieGenPipeline.generate (size, frames, fps, steps, schedule, guidance, negative
prompt, seed, batch size, tiled decoding), `condition.*` what a conditioned model is given (an image to start from,
a video to continue or to inpaint with a mask: mg.pipelines.given), `edit.*` a video that an editing model edits by
the instructions given as prompts, `--reference_image` images of the subject a personalization model puts in each
prompt's video (one video per image), `output.*` how files are written. `--help` lists them all.
The resolved configuration and a log with per-video timing are written into the output folder.
"""
import logging
from pathlib import Path
from typing import Optional

import mg  # noqa: F401  (quiet logging before mindspore loads)
from jsonargparse import ActionConfigFile, ArgumentParser

from mg.pipelines import load_pipeline
from mg.models.tae.io import load_tae_config
from mg.pipelines.cli import add_sampling_arguments, sample_options
from mg.pipelines.given import EditOptions, GivenOptions, check_reference_images
from mg.pipelines.outputs import OutputOptions, check_formats, free_stem
from mg.pipelines.prompt_files import read_prompts

_logger = logging.getLogger("inference")


def build_parser():
    parser = ArgumentParser(description=__doc__.split("\n")[0], prog="inference.py")
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file with any of the options below")
    parser.add_argument("--prompts", type=str, nargs="+", default=None, help="prompts to generate")
    parser.add_argument("--prompts_file", type=Optional[str], default=None, help=".txt (one per line) or .csv file")
    parser.add_argument("--output_path", type=str, default="output", help="folder for the videos")
    parser.add_argument("--reference_image", type=str, nargs="+", default=None,
                        help="images of the subject (personalization): one video of each per prompt")
    add_sampling_arguments(parser, skip={"condition", "edit", "reference_images"}, outputs=False)
    parser.add_class_arguments(GivenOptions, "condition")
    parser.add_class_arguments(EditOptions, "edit")
    parser.add_class_arguments(OutputOptions, "output")
    return parser


def main(argv=None):
    parser = build_parser()
    cfg = parser.parse_args(argv)
    prompts = list(cfg.prompts or [])
    if cfg.prompts_file:
        prompts += read_prompts(cfg.prompts_file)
    if not prompts:
        parser.error("give --prompts and/or --prompts_file")
    sample = sample_options(cfg)
    check_formats(cfg.output.formats)
    given, edit = GivenOptions(**dict(cfg.condition)), EditOptions(**dict(cfg.edit))
    try:  # the files are read and checked before any model is loaded
        if given.given and edit.given:
            raise ValueError("--edit.video edits a video: do not combine it with --condition.*")
        if given.given:
            given.check(sample["num_frames"], load_tae_config(cfg.model.tae_checkpoint).temporal_compression)
        if edit.given:
            edit.check(sample["num_frames"])
        check_reference_images(cfg.reference_image or [])
    except ValueError as err:
        parser.error(str(err))
    out = Path(cfg.output_path)
    out.mkdir(parents=True, exist_ok=True)
    config_name = free_stem(out, "inference_config", [".yaml"], overwrite=False) + ".yaml"
    parser.save(cfg, str(out / config_name), skip_unset=False, skip_validation=True)
    handler = logging.FileHandler(out / "inference.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    loggers = [logging.getLogger("mg"), _logger]  # the per-video timing comes from mg.pipelines
    for logger in loggers:
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
    try:
        pipeline = load_pipeline(**dict(cfg.model))
        paths = pipeline.generate_files(prompts, str(out), tuple(cfg.output.formats), cfg.output.save_latents,
                                        cfg.output.overwrite, progress=True, condition=given, edit=edit,
                                        reference_images=cfg.reference_image, **sample)
        _logger.info("wrote %d files to %s (config: %s)", len(paths), out, config_name)
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        handler.close()
    return paths


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    main()
