"""Model averaging: several transformers of one architecture become one, a weighted average of their parameters
(Movie Gen's last stage: "multiple models are trained and combined to form the final model through a model
averaging approach").

Inputs are what `export_dit` reads, mixed freely: training checkpoint files, exported model files, sharded
checkpoint directories (or a directory of checkpoints: its newest complete one). Each gives the weights
`previous_stage_weights` gives a next training stage: the EMA weights when present, else the raw ones, so
averaging and stage growth never disagree on which weights a checkpoint's model is.

Everything that can refuse the work is checked before any averaging: the option values, that the output does not
exist yet (unless it is to be replaced), that every input is readable, and that all inputs have the same parameter
names and shapes and, where recorded, the same transformer config. Averaging models of different architectures, or
of one architecture configured differently, would give a model that is none of them.

Memory: the average is built one parameter at a time: that parameter's value in every input is read, the values
are summed with their weights in float64 and the sum, cast back to the stored dtype, is kept. A sharded input is
read a parameter at a time, so the whole model of a parallel run is never held here; a single file is read whole
once (the form one-process runs write; its SHA-256 is checked on that read) and kept until the end. The average
itself is one whole model in memory, as the exported file it becomes.

The output has the form of an exported transformer (`export_dit`): bare parameter names and the `dit_config`, the
names and shapes checked against that config's model, written atomically by `save_checkpoint`, so inference loads it
and a training run starts from it (`--model.pretrained_model_path`). Its metadata also records the sources and their
normalised weights.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from mg.io import CheckpointError, check_names, checkpoint_paths, read_metadata, save_checkpoint
from mg.models.dit import MovieGenDiT
from mg.models.dit.io import config_from_dict, config_to_dict
from mg.parallel.sharded_checkpoint import ShardedCheckpoint, is_sharded_checkpoint
from mg.training.checkpoint import find_checkpoint
from mg.training.dit_init import previous_stage_weights

OPTION = "--checkpoints"  # what the errors about an input name (the tool's option)


@dataclass(frozen=True)
class Source:
    """One input model: the checkpoint read (a ``.safetensors`` path or a sharded directory), its parameters'
    full shapes, a reader of one parameter, and its transformer config (normalised; None when it records none)."""

    path: Path
    shapes: dict[str, tuple]
    read: Callable[[str], np.ndarray]
    dit_config: dict | None


@dataclass(frozen=True)
class Averaged:
    """What `average_checkpoints` wrote: the ``.safetensors`` path, the checkpoints read, their normalised weights
    and the number of parameters."""

    path: Path
    sources: list[Path]
    weights: list[float]
    num_params: int


def _metadata(path: Path) -> dict:
    """The caller's metadata of a checkpoint: from a file's sidecar alone, or from a sharded directory's manifest."""
    return ShardedCheckpoint(path).metadata if is_sharded_checkpoint(path) else read_metadata(path)


def open_source(checkpoint: str | os.PathLike) -> Source:
    """Resolve and open one input (`find_checkpoint`'s errors name the option and the path); its transformer config
    is normalised to every DiTConfig field, so configs written by different versions compare by value."""
    path = find_checkpoint(checkpoint, OPTION)
    config = _metadata(path).get("dit_config")
    if config is not None:
        config = config_to_dict(config_from_dict(config, f"{OPTION} {path}"))
    shapes, read = previous_stage_weights(path)
    if not shapes:  # a sharded directory without 'ema/' and 'model/' tensors (a file raises in select_weights)
        raise CheckpointError(f"{OPTION} {path} holds no model weights (no 'ema/' or 'model/' tensors)")
    return Source(path, {name: tuple(shape) for name, shape in shapes.items()}, read, config)


def normalized_weights(weights: Sequence[float] | None, count: int) -> list[float]:
    """The averaging weight of each of `count` checkpoints, summing to 1: uniform when `weights` is None, else
    `weights` (one positive, finite value per checkpoint) scaled."""
    if weights is None:
        return [1.0 / count] * count
    if len(weights) != count:
        raise ValueError(f"--weights gives {len(weights)} weights for {count} {OPTION}: one per checkpoint, please")
    if not all(math.isfinite(w) and w > 0 for w in weights):
        raise ValueError(f"--weights must all be positive and finite, got {list(weights)}")
    total = math.fsum(weights)
    return [w / total for w in weights]


def _refuse_existing(output: str | os.PathLike, overwrite: bool) -> None:
    """An existing output is refused before anything is read (`save_checkpoint` refuses it too, but at the end)."""
    tensors_path, sidecar = checkpoint_paths(output)
    if not overwrite and (tensors_path.exists() or sidecar.exists()):
        raise FileExistsError(f"--output {output}: {tensors_path} already exists (pass --overwrite true to replace it)")


def _first_difference(a: dict, b: dict) -> str | None:
    """The first key (in `a`'s order, then `b`'s) whose values differ, or None."""
    return next((key for key in {**a, **b} if a.get(key) != b.get(key)), None)


def _configured(sources: Sequence[Source]) -> Source:
    """The first source recording a transformer config, after checking that every other source recording one
    records the same."""
    configured = [source for source in sources if source.dit_config is not None]
    if not configured:
        raise CheckpointError(f"{OPTION}: none of {[str(s.path) for s in sources]} has a 'dit_config' in its "
                              f"metadata: not transformer checkpoints")
    reference = configured[0]
    for other in configured[1:]:
        key = _first_difference(reference.dit_config, other.dit_config)
        if key is not None:
            raise CheckpointError(f"{OPTION} {reference.path} and {other.path} have different transformer configs: "
                                  f"dit_config.{key} is {reference.dit_config.get(key)!r} vs "
                                  f"{other.dit_config.get(key)!r}")
    return reference


def check_same_architecture(sources: Sequence[Source]) -> dict:
    """Check that every source has the first one's parameter names and shapes and that the sources recording a
    transformer config record the same one; return that config, which the output is written with (a model file
    without one would load nowhere). The names are also checked against the model of that config, as `export_dit`
    does."""
    from mindspore.nn.utils import no_init_parameters

    first = sources[0]
    for other in sources[1:]:
        check_names(first.shapes, other.shapes, f"{OPTION} {other.path} does not have the parameters of {first.path}")
    reference = _configured(sources)
    with no_init_parameters():  # names and shapes only
        model = MovieGenDiT(config_from_dict(reference.dit_config, str(reference.path)))
    check_names({p.name: p.shape for p in model.get_parameters()}, first.shapes,
                f"{OPTION} {reference.path} does not fit the transformer of its dit_config")
    return reference.dit_config


def average_parameter(arrays: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """The weighted sum of one parameter's values (`weights` summing to 1), accumulated in float64 so that the
    rounding happens once, at the cast back to the stored dtype (the widest one when the inputs differ)."""
    total = np.zeros(np.shape(arrays[0]), np.float64)
    for weight, array in zip(weights, arrays):
        total += weight * np.asarray(array, np.float64)
    return total.astype(np.result_type(*arrays))


def average_checkpoints(checkpoints: Sequence[str | os.PathLike], output: str | os.PathLike,
                        weights: Sequence[float] | None = None, overwrite: bool = False) -> Averaged:
    """Write the weighted average (uniform by default) of the transformers of two or more checkpoints as a model
    file ``<output>.safetensors`` + ``.json``; an existing one is refused unless `overwrite`."""
    if len(checkpoints) < 2:
        raise ValueError(f"{OPTION} needs two or more checkpoints to average, got {len(checkpoints)}: "
                         f"{[str(c) for c in checkpoints]}")
    normalized = normalized_weights(weights, len(checkpoints))
    _refuse_existing(output, overwrite)
    sources = [open_source(checkpoint) for checkpoint in checkpoints]
    dit_config = check_same_architecture(sources)
    averaged = {name: average_parameter([source.read(name) for source in sources], normalized)
                for name in sources[0].shapes}
    paths = [source.path for source in sources]
    info = {"dit_config": dit_config, "sources": [str(p) for p in paths], "average_weights": normalized}
    return Averaged(save_checkpoint(output, averaged, info, overwrite=overwrite), paths, normalized, len(averaged))
