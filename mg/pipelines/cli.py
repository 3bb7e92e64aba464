"""The options every command that samples shares (inference.py, the toy evaluation tools, make_toy_edit_data.py's
backtranslation): how the pipeline is built (`model`), how it samples (`sample`) and how videos are written
(`output`), and the check of the sampling options before any model is loaded."""
from mg.pipelines.outputs import OutputOptions
from mg.pipelines.text_to_video import MovieGenPipeline, check_options, load_pipeline

# What a tool that measures generated videos decides itself: the prompts, whether to decode, what the model is given
TOOL_OWNED = ("decode", "condition", "edit")


def add_sampling_arguments(parser, skip=TOOL_OWNED, outputs=True):
    """Add to `parser` the `model` group (load_pipeline's arguments), the `sample` group (MovieGenPipeline.generate's,
    except the prompts, the progress bar and `skip`) and, with `outputs`, the `output` group (OutputOptions)."""
    parser.add_function_arguments(load_pipeline, "model")
    parser.add_method_arguments(MovieGenPipeline, "generate", "sample", skip={"prompts", "progress", *skip})
    if outputs:
        parser.add_class_arguments(OutputOptions, "output")


def sample_options(cfg, **fixed):
    """The parsed `sample` group as generate's keyword arguments, with `fixed` ones set (say progress=False); raises
    ValueError naming the option when a value cannot sample."""
    sample = {**dict(cfg.sample), **fixed}
    check_options(sample["num_frames"], sample["fps"], sample["num_steps"], sample["schedule"],
                  sample["guidance_scale"], sample["batch_size"])
    return sample
