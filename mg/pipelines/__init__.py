"""Sampling pipelines: prompts in, videos (arrays or files) out."""
from mg.pipelines.outputs import FORMATS, save_video, slugify
from mg.pipelines.sizes import resolve_size
from mg.pipelines.text import TextConditioner
from mg.pipelines.text_to_video import Generation, MovieGenPipeline, initial_noise, load_pipeline

__all__ = ["FORMATS", "Generation", "MovieGenPipeline", "TextConditioner", "initial_noise", "load_pipeline",
           "resolve_size", "save_video", "slugify"]
