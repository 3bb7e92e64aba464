"""Crash-safe checkpoints: a safetensors file of arrays plus a JSON sidecar that marks it complete.

A checkpoint with stem ``run/step_000000100`` is two files:

- ``step_000000100.safetensors``: every array (model, optimizer moments, EMA, ...), flat ``name -> np.ndarray``;
- ``step_000000100.json``: the caller's metadata plus the names, shapes and dtypes of the arrays and the byte size of
  the safetensors file.

Both are written to hidden temporaries in the same directory, fsynced and renamed into place, the JSON last. A
checkpoint counts as complete only when its JSON exists, so killing the process at any moment (even SIGKILL) leaves
either the new checkpoint complete or no trace of it except temporaries, which `CheckpointManager` removes.

Arrays of several parts share one file through namespaces: ``merge_namespaces({"model": a, "ema": b})`` gives keys
``model/<name>`` and ``ema/<name>``; ``split_namespaces`` undoes it.
"""
from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path
from typing import Mapping, NamedTuple

import mindspore as ms
import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

FORMAT_NAME = "mg-checkpoint"
FORMAT_VERSION = 1
TENSORS_SUFFIX = ".safetensors"
SIDECAR_SUFFIX = ".json"
_TMP_MARK = ".tmp-"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, corrupt or does not fit the model."""


# ----------------------------------------------------------------------------------------------------------------------
# Model parameters <-> arrays
# ----------------------------------------------------------------------------------------------------------------------
def tensor_to_numpy(tensor: ms.Tensor) -> np.ndarray:
    """A NumPy copy of ``tensor``; bfloat16 (which NumPy lacks) comes back as float32."""
    if tensor.dtype == ms.bfloat16:
        tensor = tensor.astype(ms.float32)
    return tensor.asnumpy().copy()  # asnumpy() can share memory with the tensor


def state_dict(cell: ms.nn.Cell) -> dict[str, np.ndarray]:
    """Return every parameter of ``cell`` as ``{parameter name: np.ndarray copy}`` (bfloat16 becomes float32)."""
    return {param.name: tensor_to_numpy(param) for param in cell.get_parameters()}


class LoadResult(NamedTuple):
    """Names that did not line up in a non-strict `load_state_dict`."""

    missing: list[str]
    unexpected: list[str]
    mismatched: list[str]  # "name: checkpoint (a, b) vs model (c, d)"


def load_state_dict(cell: ms.nn.Cell, tensors: Mapping[str, np.ndarray], strict: bool = True) -> LoadResult:
    """Copy ``tensors`` into the parameters of ``cell`` (in place, cast to each parameter's dtype; compiled graphs
    see the new values).

    With ``strict=True`` any missing name, unexpected name or shape mismatch raises one `CheckpointError` listing all of
    them and nothing is loaded. With ``strict=False`` the matching parameters are loaded and the rest is returned.
    """
    params = {param.name: param for param in cell.get_parameters()}
    missing = sorted(name for name in params if name not in tensors)
    unexpected = sorted(name for name in tensors if name not in params)
    mismatched = sorted(
        f"{name}: checkpoint {tuple(tensors[name].shape)} vs model {tuple(params[name].shape)}"
        for name in params
        if name in tensors and tuple(tensors[name].shape) != tuple(params[name].shape)
    )
    result = LoadResult(missing, unexpected, mismatched)
    if strict and (missing or unexpected or mismatched):
        raise CheckpointError(f"state dict does not fit {type(cell).__name__}: {_describe(result)}")
    bad = {line.split(":")[0] for line in mismatched}
    for name, param in params.items():
        if name in tensors and name not in bad:
            # copy_ writes into the parameter's memory (casting, bf16 included); set_data would swap in a new tensor
            # that an already compiled ms.jit graph never sees, and ops.assign has no bf16 CPU kernel.
            param.copy_(ms.Tensor(np.asarray(tensors[name])))
    return result


def _describe(result: LoadResult, limit: int = 20) -> str:
    parts = []
    for label, names in zip(("missing", "unexpected", "shape mismatch"), result):
        if names:
            shown = ", ".join(names[:limit]) + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")
            parts.append(f"{len(names)} {label} [{shown}]")
    return "; ".join(parts)


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
# Atomic files
# ----------------------------------------------------------------------------------------------------------------------
def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tmp_name(final: Path) -> Path:
    return final.with_name(f".{final.name}{_TMP_MARK}{os.getpid()}")


def _paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """(tensors file, sidecar) for a stem, a ``.safetensors`` path or a ``.json`` path."""
    path = Path(path)
    if path.suffix in (TENSORS_SUFFIX, SIDECAR_SUFFIX):
        path = path.with_suffix("")
    return path.with_name(path.name + TENSORS_SUFFIX), path.with_name(path.name + SIDECAR_SUFFIX)


def is_complete(path: str | os.PathLike) -> bool:
    """True when both files of the checkpoint exist (the sidecar is written last, so it marks completion)."""
    tensors_path, sidecar = _paths(path)
    return sidecar.is_file() and tensors_path.is_file()


def save_checkpoint(path_stem: str | os.PathLike, tensors: Mapping[str, np.ndarray], metadata: Mapping,
                    overwrite: bool = False) -> Path:
    """Write ``<stem>.safetensors`` and ``<stem>.json`` atomically; return the ``.safetensors`` path.

    ``metadata`` must be JSON-serialisable; it is stored under ``"metadata"`` in the sidecar next to the names, shapes
    and dtypes of ``tensors``. An existing checkpoint is refused unless ``overwrite=True``, in which case its sidecar is
    removed first (a crash then leaves it incomplete rather than mixed).
    """
    tensors_path, sidecar = _paths(path_stem)
    if not overwrite and (tensors_path.exists() or sidecar.exists()):
        raise FileExistsError(f"checkpoint {tensors_path} already exists (pass overwrite=True to replace it)")
    arrays = {name: np.asarray(array, order="C") for name, array in tensors.items()}  # keeps 0-d shapes
    bad = [name for name, array in arrays.items() if array.dtype == object]
    if bad:
        raise TypeError(f"checkpoint {tensors_path}: tensors {bad} are not numeric arrays")
    try:
        user_meta = json.loads(json.dumps(dict(metadata)))
    except (TypeError, ValueError) as err:
        raise TypeError(f"checkpoint {sidecar}: metadata is not JSON-serialisable ({err})") from err
    tensors_path.parent.mkdir(parents=True, exist_ok=True)
    if overwrite:
        sidecar.unlink(missing_ok=True)

    tmp_tensors, tmp_sidecar = _tmp_name(tensors_path), _tmp_name(sidecar)
    try:
        save_file(arrays, str(tmp_tensors))
        _fsync_file(tmp_tensors)
        os.replace(tmp_tensors, tensors_path)
        _fsync_dir(tensors_path.parent)

        record = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "tensors_file": tensors_path.name,
            "tensors_bytes": tensors_path.stat().st_size,
            "tensors": {name: {"shape": list(a.shape), "dtype": str(a.dtype)} for name, a in arrays.items()},
            "metadata": user_meta,
        }
        with open(tmp_sidecar, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_sidecar, sidecar)
        _fsync_dir(sidecar.parent)
    finally:
        tmp_tensors.unlink(missing_ok=True)
        tmp_sidecar.unlink(missing_ok=True)
    return tensors_path


def read_metadata(path: str | os.PathLike) -> dict:
    """The caller's metadata of a complete checkpoint, without reading its arrays."""
    return _read_sidecar(*_paths(path))["metadata"]


def _read_sidecar(tensors_path: Path, sidecar: Path) -> dict:
    if not sidecar.is_file():
        state = "incomplete (its .json sidecar is missing)" if tensors_path.exists() else "missing"
        raise CheckpointError(f"checkpoint {tensors_path} is {state}")
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint sidecar {sidecar} is unreadable: {err}") from err
    if not isinstance(record, dict) or record.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{sidecar} is not an {FORMAT_NAME} sidecar")
    return record


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """Read a checkpoint given by stem, ``.safetensors`` or ``.json`` path; return ``(tensors, metadata)``.

    Raises `CheckpointError` naming the file when it is missing, incomplete (no sidecar), truncated, corrupt or when
    its arrays disagree with the names/shapes recorded in the sidecar.
    """
    tensors_path, sidecar = _paths(path)
    record = _read_sidecar(tensors_path, sidecar)
    if not tensors_path.is_file():
        raise CheckpointError(f"checkpoint {tensors_path} is missing (its sidecar {sidecar} exists)")
    size = tensors_path.stat().st_size
    if size != record["tensors_bytes"]:
        raise CheckpointError(f"checkpoint {tensors_path} has {size} bytes, its sidecar says {record['tensors_bytes']}")
    try:
        tensors = load_file(str(tensors_path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint {tensors_path} is corrupt: {err}") from err
    expected = {name: tuple(spec["shape"]) for name, spec in record["tensors"].items()}
    actual = {name: tuple(array.shape) for name, array in tensors.items()}
    if expected != actual:
        raise CheckpointError(f"checkpoint {tensors_path} does not match its sidecar {sidecar} (names or shapes)")
    return tensors, record["metadata"]


# ----------------------------------------------------------------------------------------------------------------------
# A directory of step checkpoints
# ----------------------------------------------------------------------------------------------------------------------
def _step_of(stem: str, prefix: str) -> int | None:
    match = re.fullmatch(rf"{re.escape(prefix)}_(\d+)", stem)
    return int(match.group(1)) if match else None


def _complete_checkpoints(directory: Path, prefix: str) -> list[Path]:
    found = []
    for sidecar in directory.glob(f"{prefix}_*{SIDECAR_SUFFIX}"):
        step = _step_of(sidecar.stem, prefix)
        if step is not None and is_complete(sidecar):
            found.append((step, sidecar.with_suffix(TENSORS_SUFFIX)))
    return [path for _, path in sorted(found)]


class CheckpointManager:
    """Numbered checkpoints ``<prefix>_<step:09d>`` in one directory, keeping the newest ``keep_last``.

    Only files matching the prefix pattern are ever touched. Incomplete checkpoints (no sidecar) and temporaries left
    by a killed writer are ignored by `list` and removed by `cleanup` (run on construction and after each save);
    only one process may save into a directory at a time.
    """

    def __init__(self, directory: str | os.PathLike, keep_last: int | None = 3, prefix: str = "step"):
        if keep_last is not None and keep_last < 1:
            raise ValueError(f"keep_last must be >= 1 or None (keep all), got {keep_last}")
        if not re.fullmatch(r"[A-Za-z0-9_\-]+", prefix):
            raise ValueError(f"checkpoint prefix {prefix!r} must be letters, digits, '_' or '-'")
        self.directory = Path(directory)
        self.keep_last = keep_last
        self.prefix = prefix
        self.directory.mkdir(parents=True, exist_ok=True)
        self.cleanup()

    def path_for(self, step: int) -> Path:
        """The ``.safetensors`` path of the checkpoint of ``step``."""
        return self.directory / f"{self.prefix}_{step:09d}{TENSORS_SUFFIX}"

    def list(self) -> list[Path]:
        """Complete checkpoints (``.safetensors`` paths) sorted by step, oldest first."""
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
        """Delete complete checkpoints beyond the newest ``keep_last`` (sidecar first, so a crash leaves no fake)."""
        if self.keep_last is None:
            return
        for path in self.list()[:-self.keep_last]:
            tensors_path, sidecar = _paths(path)
            sidecar.unlink(missing_ok=True)
            tensors_path.unlink(missing_ok=True)

    def cleanup(self) -> None:
        """Remove temporaries of killed saves and tensor files whose sidecar never got written."""
        for path in self.directory.glob(f".{self.prefix}_*{_TMP_MARK}*"):
            path.unlink(missing_ok=True)
        for path in self.directory.glob(f"{self.prefix}_*{TENSORS_SUFFIX}"):
            if _step_of(path.stem, self.prefix) is not None and not path.with_suffix(SIDECAR_SUFFIX).exists():
                path.unlink(missing_ok=True)

    def resolve(self, resume: str | os.PathLike) -> Path:
        """Turn a ``--train.resume`` value into a complete checkpoint's ``.safetensors`` path.

        ``"latest"``: the newest complete checkpoint in this manager's directory; a directory: the newest complete one
        there (same prefix); otherwise a checkpoint stem, ``.safetensors`` or ``.json`` path. Raises `CheckpointError`.
        """
        if str(resume) == "latest":
            found = self.latest()
            if found is None:
                raise CheckpointError(f"--resume latest: no complete checkpoint in {self.directory}")
            return found
        path = Path(resume)
        if path.is_dir():
            # A read-only look: no cleanup in a directory this manager was not asked to manage.
            done = _complete_checkpoints(path, self.prefix)
            newest = done[-1] if done else None
            if newest is None:
                raise CheckpointError(f"--resume {path}: no complete '{self.prefix}_*' checkpoint in that directory")
            return newest
        tensors_path, sidecar = _paths(path)
        if not is_complete(path):
            state = "incomplete (no .json sidecar)" if tensors_path.exists() else "not found"
            raise CheckpointError(f"--resume {resume}: checkpoint {tensors_path} is {state}")
        return tensors_path
