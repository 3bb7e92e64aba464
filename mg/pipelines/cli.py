"""The options every command that samples shares (inference.py, the toy evaluation tools, make_toy_edit_data.py's
backtranslation): how the pipeline is built (`model`), how it samples (`sample`) and how videos are written
(`output`), and the check of the sampling options before any model is loaded."""
from typing import Dict, Optional

from mg.io import CheckpointError
from mg.pipelines.outputs import OutputOptions
from mg.pipelines.text_to_video import MovieGenPipeline, check_options, load_pipeline
from mg.training.checkpoint import find_checkpoint

# What a tool that measures generated videos decides itself: the prompts, whether to decode, what the model is given
TOOL_OWNED = ("decode", "condition", "edit", "reference_images")


def add_sampling_arguments(parser, skip=TOOL_OWNED, outputs=True):
    """Add to `parser` the `model` group (load_pipeline's arguments), the `sample` group (MovieGenPipeline.generate's,
    except the prompts, the progress bar and `skip`) and, with `outputs`, the `output` group (OutputOptions)."""
    parser.add_function_arguments(load_pipeline, "model")
    parser.add_method_arguments(MovieGenPipeline, "generate", "sample", skip={"prompts", "progress", *skip})
    if outputs:
        parser.add_class_arguments(OutputOptions, "output")


def add_models_argument(parser):
    """`--models`: several transformers a tool compares, in order (default: model.dit_checkpoint alone)."""
    parser.add_argument("--models", type=Optional[Dict[str, str]], default=None,
                        help="{name: transformer checkpoint (or a run's ckpt folder: its newest)}, evaluated in this "
                             "order (default: model.dit_checkpoint)")


def compared_models(parser, cfg):
    """({name: checkpoint path}, the `model` options without the transformer) of a tool with `--models`; a missing
    checkpoint is a parser error before any model loads."""
    model = dict(cfg.model)
    named = cfg.models or {"model": model["dit_checkpoint"]}
    model.pop("dit_checkpoint")
    try:
        return {name: find_checkpoint(path, f"--models.{name}") for name, path in named.items()}, model
    except CheckpointError as err:
        parser.error(str(err))


def sample_options(cfg, **fixed):
    """The parsed `sample` group as generate's keyword arguments, with `fixed` ones set (say progress=False); raises
    ValueError naming the option when a value cannot sample."""
    sample = {**dict(cfg.sample), **fixed}
    check_options(sample["num_frames"], sample["fps"], sample["num_steps"], sample["schedule"],
                  sample["guidance_scale"], sample["batch_size"])
    return sample
