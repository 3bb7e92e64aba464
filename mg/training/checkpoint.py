"""Training-run checkpoints on top of the checkpoint format of `mg.io`: numbered checkpoints in one directory with
pruning, clean-up and ``--train.resume`` resolution; namespaces that put several parts in one file; RNG state; the
model weights of a training checkpoint, and their export as a model file.

A numbered checkpoint is either a file pair ``step_<step:09d>.safetensors`` + ``.json`` (one writer) or a sharded
directory ``step_<step:09d>/`` (every rank writes its slices; `mg.parallel.sharded_checkpoint`). Both count once
complete: the file pair when its sidecar exists, the directory when it holds its manifest.

Arrays of several parts share one file through namespaces: ``merge_namespaces({"model": a, "ema": b})`` gives keys
``model/<name>`` and ``ema/<name>``; ``split_namespaces`` undoes it.
"""
from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Mapping

import numpy as np

from mg.io import (SIDECAR_SUFFIX, TENSORS_SUFFIX, CheckpointError, check_names, checkpoint_paths, is_complete,
                   load_checkpoint, remove_stale_temporaries, save_checkpoint)
from mg.models.dit.io import config_from_dict, select_weights
from mg.models.dit.model import MovieGenDiT
from mg.parallel import sharded_checkpoint as sharded


# ----------------------------------------------------------------------------------------------------------------------
# Namespaces
# ----------------------------------------------------------------------------------------------------------------------
def merge_namespaces(parts: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """``{"model": {"w": a}, "ema": {"w": b}}`` -> ``{"model/w": a, "ema/w": b}`` (one flat dict for one file)."""
    merged = {}
    for space, tensors in parts.items():
        if "/" in space:
            raise ValueError(f"namespace {space!r} must not contain '/'")
        merged.update({f"{space}/{name}": array for name, array in tensors.items()})
    return merged


def split_namespaces(tensors: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Inverse of `merge_namespaces`; keys without a namespace raise `CheckpointError`."""
    parts: dict[str, dict[str, np.ndarray]] = {}
    for key, array in tensors.items():
        space, sep, name = key.partition("/")
        if not sep:
            raise CheckpointError(f"tensor {key!r} has no '<namespace>/' prefix")
        parts.setdefault(space, {})[name] = array
    return parts


# ----------------------------------------------------------------------------------------------------------------------
# RNG state (JSON metadata)
# ----------------------------------------------------------------------------------------------------------------------
def rng_state(generators: Mapping[str, np.random.Generator] | None = None) -> dict:
    """JSON-able state of Python's `random`, NumPy's global RNG and the given named NumPy Generators.

    MindSpore's own random ops keep per-op state that cannot be captured; code that must resume exactly draws its
    randomness from NumPy Generators passed here.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "python": [version, list(internal), gauss],
        "numpy_global": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "generators": {name: gen.bit_generator.state for name, gen in (generators or {}).items()},
    }


def set_rng_state(state: Mapping, generators: Mapping[str, np.random.Generator] | None = None) -> None:
    """Restore what `rng_state` captured; every named generator given must be present in ``state``."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy_global"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    saved = state["generators"]
    for name, gen in (generators or {}).items():
        if name not in saved:
            raise CheckpointError(f"no saved state for RNG {name!r} (saved: {sorted(saved)})")
        gen.bit_generator.state = saved[name]


# ----------------------------------------------------------------------------------------------------------------------
# A directory of step checkpoints
# ----------------------------------------------------------------------------------------------------------------------
def _step_of(stem: str, prefix: str) -> int | None:
    match = re.fullmatch(rf"{re.escape(prefix)}_(\d+)", stem)
    return int(match.group(1)) if match else None


def _complete_checkpoints(directory: Path, prefix: str) -> list[Path]:
    """Complete checkpoints sorted by step: ``.safetensors`` paths of file checkpoints, sharded directories."""
    found = []
    for sidecar in directory.glob(f"{prefix}_*{SIDECAR_SUFFIX}"):
        step = _step_of(sidecar.stem, prefix)
        if step is not None and is_complete(sidecar):
            found.append((step, sidecar.with_suffix(TENSORS_SUFFIX)))
    for folder in directory.glob(f"{prefix}_*"):
        step = _step_of(folder.name, prefix)
        if step is not None and sharded.is_sharded_checkpoint(folder):
            found.append((step, folder))
    return [path for _, path in sorted(found)]


def find_checkpoint(where: str | os.PathLike, option: str, prefix: str = "step") -> Path:
    """A complete checkpoint given as a sharded checkpoint directory (returned as is), as a directory of
    checkpoints (its newest complete ``<prefix>_*`` one; a read-only look) or as a stem, ``.safetensors`` or
    ``.json`` path (its ``.safetensors`` path is returned); `option` names what gave it in the `CheckpointError`
    raised when there is none."""
    path = Path(where)
    if sharded.is_sharded_checkpoint(path):
        return path
    if path.is_dir():
        done = _complete_checkpoints(path, prefix)
        if not done:
            if _step_of(path.name, prefix) is not None:
                raise CheckpointError(f"{option} {path}: sharded checkpoint is incomplete (no {sharded.MANIFEST})")
            raise CheckpointError(f"{option} {path}: no complete '{prefix}_*' checkpoint in that directory")
        return done[-1]
    tensors_path, _ = checkpoint_paths(path)
    if not is_complete(path):
        state = "incomplete (no .json sidecar)" if tensors_path.exists() else "not found"
        raise CheckpointError(f"{option} {where}: checkpoint {tensors_path} is {state}")
    return tensors_path


class CheckpointManager:
    """Numbered checkpoints ``<prefix>_<step:09d>`` (file pairs or sharded directories) in one directory, keeping
    the newest ``keep_last``.

    Incomplete checkpoints (no sidecar, no manifest) are ignored by `list`; they and the temporaries of killed
    writers are removed by `cleanup` (run on construction and after each file save). Of the files and directories,
    only those matching the prefix pattern are ever touched. Only one process may save into a directory at a time;
    for a sharded checkpoint, every rank writes into `partial_dir_for` and one process calls `commit_sharded`.
    """

    def __init__(self, directory: str | os.PathLike, keep_last: int | None = 3, prefix: str = "step",
                 cleanup: bool = True):
        if keep_last is not None and keep_last < 1:
            raise ValueError(f"keep_last must be >= 1 or None (keep all), got {keep_last}")
        if not re.fullmatch(r"[A-Za-z0-9_\-]+", prefix):
            raise ValueError(f"checkpoint prefix {prefix!r} must be letters, digits, '_' or '-'")
        self.directory = Path(directory)
        self.keep_last = keep_last
        self.prefix = prefix
        self.directory.mkdir(parents=True, exist_ok=True)
        if cleanup:  # off on the ranks of a parallel run that do not own the run directory
            self.cleanup()

    def path_for(self, step: int) -> Path:
        """The ``.safetensors`` path of the checkpoint of ``step``."""
        return self.directory / f"{self.prefix}_{step:09d}{TENSORS_SUFFIX}"

    def final_dir_for(self, step: int) -> Path:
        """The directory of the sharded checkpoint of ``step``."""
        return self.directory / f"{self.prefix}_{step:09d}"

    def partial_dir_for(self, step: int) -> Path:
        """The hidden directory the ranks write the shards of ``step`` into (created if missing)."""
        return sharded.partial_dir(self.final_dir_for(step))

    def commit_sharded(self, step: int, manifest: Mapping) -> Path:
        """Commit the shards of ``step`` (`mg.parallel.sharded_checkpoint.commit`), then prune; return the directory.

        No clean-up here: other ranks may already be writing a later step's partial directory."""
        final = sharded.commit(self.partial_dir_for(step), self.final_dir_for(step), manifest)
        self.prune()
        return final

    def list(self) -> list[Path]:
        """Complete checkpoints sorted by step, oldest first: ``.safetensors`` paths and sharded directories."""
        return _complete_checkpoints(self.directory, self.prefix)

    def latest(self) -> Path | None:
        """The newest complete checkpoint, or None."""
        done = self.list()
        return done[-1] if done else None

    def save(self, step: int, tensors: Mapping[str, np.ndarray], metadata: Mapping | None = None,
             overwrite: bool = False) -> Path:
        """Save the checkpoint of ``step`` (``"step"`` is added to the metadata), then prune and clean up."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        path = save_checkpoint(self.path_for(step), tensors, {**(metadata or {}), "step": step}, overwrite=overwrite)
        self.prune()
        self.cleanup()
        return path

    def prune(self) -> None:
        """Delete complete checkpoints beyond the newest ``keep_last`` (sidecar or manifest first, so a crash leaves
        no fake)."""
        if self.keep_last is None:
            return
        for path in self.list()[:-self.keep_last]:
            if path.is_dir():
                sharded.remove(path)
                continue
            tensors_path, sidecar = checkpoint_paths(path)
            sidecar.unlink(missing_ok=True)
            tensors_path.unlink(missing_ok=True)

    def cleanup(self) -> None:
        """Remove temporaries of killed saves, tensor files whose sidecar never got written, partial directories of
        sharded saves and sharded directories whose removal was interrupted (no manifest). Call it only while no
        process writes checkpoints here (the run directory's lock)."""
        remove_stale_temporaries(self.directory)
        for path in self.directory.glob(f"{self.prefix}_*{TENSORS_SUFFIX}"):
            if _step_of(path.stem, self.prefix) is not None and not path.with_suffix(SIDECAR_SUFFIX).exists():
                path.unlink(missing_ok=True)
        for folder in self.directory.glob(f".{self.prefix}_*.partial"):
            if folder.is_dir() and _step_of(folder.name[1:-len(".partial")], self.prefix) is not None:
                shutil.rmtree(folder)
        for folder in self.directory.glob(f"{self.prefix}_*"):
            step = _step_of(folder.name, self.prefix)
            if step is not None and folder.is_dir() and not sharded.is_sharded_checkpoint(folder):
                shutil.rmtree(folder)

    def resolve(self, resume: str | os.PathLike) -> Path:
        """Turn a ``--train.resume`` value into a complete checkpoint: a ``.safetensors`` path or a sharded directory.

        ``"latest"``: the newest complete checkpoint in this manager's directory; a sharded checkpoint directory;
        another directory: the newest complete one there (same prefix); otherwise a checkpoint stem, ``.safetensors``
        or ``.json`` path. Raises `CheckpointError`.
        """
        if str(resume) == "latest":
            found = self.latest()
            if found is None:
                raise CheckpointError(f"--resume latest: no complete checkpoint in {self.directory}")
            return found
        return find_checkpoint(resume, "--train.resume", self.prefix)


# ----------------------------------------------------------------------------------------------------------------------
# The model weights of a training checkpoint
# ----------------------------------------------------------------------------------------------------------------------
def model_weights(path: str | os.PathLike, prefer_ema: bool = True) -> tuple[dict[str, np.ndarray], dict]:
    """(parameters by bare name, metadata) of a complete checkpoint: a file (`select_weights`: ``ema/`` if present
    and preferred, else ``model/``, else bare names) or a sharded directory (consolidated in this process)."""
    if sharded.is_sharded_checkpoint(path):
        return sharded.consolidate(path, prefer_ema)
    tensors, metadata = load_checkpoint(path)
    return select_weights(tensors, prefer_ema, str(path)), metadata


def export_dit(checkpoint: str | os.PathLike, output: str | os.PathLike, prefer_ema: bool = True,
               overwrite: bool = False, option: str = "--checkpoint") -> tuple[Path, Path]:
    """Write the transformer of a training checkpoint (a file, a sharded directory, or the newest complete one in a
    directory) as a model checkpoint that `mg.models.dit.load_dit` reads: bare parameter names, ``dit_config``
    copied. Names and shapes are checked against that config without building the weights. Returns (the written
    ``.safetensors`` path, the checkpoint read)."""
    from mindspore.nn.utils import no_init_parameters

    source = find_checkpoint(checkpoint, option)
    weights, metadata = model_weights(source, prefer_ema)
    if "dit_config" not in metadata:
        raise CheckpointError(f"{option} {source}: no 'dit_config' in its metadata: not a transformer checkpoint")
    with no_init_parameters():  # names and shapes only
        model = MovieGenDiT(config_from_dict(metadata["dit_config"], str(source)))
    check_names({p.name: p.shape for p in model.get_parameters()}, weights,
                f"{option} {source} does not fit the transformer of its dit_config")
    info = {"dit_config": metadata["dit_config"], "source": str(source), "weights": "ema" if prefer_ema else "model"}
    return save_checkpoint(output, weights, info, overwrite=overwrite), source
