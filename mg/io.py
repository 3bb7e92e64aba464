"""The bottom layer of mg: atomic files, the checkpoint format, and model parameters <-> NumPy arrays.

Every loader and writer of the package goes through this module; it imports nothing from mg.

Atomic files. `atomic_path(path)` yields a temporary path to write; on success the file is fsynced and renamed onto
``path``, on failure it is removed. The temporary lives in a private hidden directory beside the target,
``.<name>.mg-tmp-<host>-<pid>-<random>/<name>``, so whatever a third-party writer creates next to the path it is
given lands in that directory too (safetensors 0.8's ``save_file`` writes a ``.tmpXXXXXX`` file there and renames it;
MindSpore's ``save_checkpoint`` writes ``<stem>.tmp`` and makes the result read-only). A killed process cleans up
nothing: `remove_stale_temporaries`, run when a checkpoint manager, a cache job or a training log starts, removes the
directories of writers on this host that no longer run.

Checkpoints. A checkpoint with stem ``run/step_000000100`` is two files:

- ``step_000000100.safetensors``: the arrays, flat ``name -> np.ndarray``;
- ``step_000000100.json`` (the sidecar, written last: it marks the checkpoint complete): format name and version, the
  name, shape and dtype of every array, the byte size and SHA-256 of the tensors file, and the caller's metadata.

`load_checkpoint` verifies the size and the checksum (~0.4 s per 500 MB), so a file whose header is intact but whose
data is damaged is refused instead of loading as garbage. Version-1 sidecars (no checksum) still load.

Parameters. `state_dict` / `load_state_dict` move a Cell's parameters to and from NumPy; `check_names` is the one
"do the names and shapes fit" check for everything loaded into parameters (models, EMA, optimizer state, parallel
pieces, text encoders), and `copy_into` the one way to write a parameter.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, NamedTuple

import mindspore as ms
import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

FORMAT_NAME = "mg-checkpoint"
FORMAT_VERSION = 2  # version 2 added "tensors_sha256"
TENSORS_SUFFIX = ".safetensors"
SIDECAR_SUFFIX = ".json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, corrupt or does not fit what it is loaded into."""


# ----------------------------------------------------------------------------------------------------------------------
# Atomic files
# ----------------------------------------------------------------------------------------------------------------------
_TMP_MARK = ".mg-tmp-"
# ".<name>.mg-tmp-<host>-<pid>-<hex>": host names may hold '-', so pid and token are taken from the end
_TMP_DIR = re.compile(rf"\..*{re.escape(_TMP_MARK)}(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]+")
_HOST = socket.gethostname()
_active: set[str] = set()  # names of the temporary directories this process is writing in right now


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)  # read-only is enough for fsync, and works on 0400 files and on directories
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write ``path`` through; on leaving the block without an error the temporary is
    fsynced and renamed onto ``path``, otherwise it is deleted with everything the writer created beside it.

    An existing ``path`` raises `FileExistsError` (before and, against a concurrent writer, again after writing)
    unless ``overwrite``. The temporary has the same file name as ``path`` (writers that go by the suffix work).
    """
    final = Path(path)
    if not overwrite and final.exists():
        raise FileExistsError(f"{final} already exists (pass overwrite=True to replace it)")
    final.parent.mkdir(parents=True, exist_ok=True)
    short = final.name.encode()[:64].decode(errors="ignore")  # keeps the directory's name within 255 bytes
    workdir = final.parent / f".{short}{_TMP_MARK}{_HOST}-{os.getpid()}-{secrets.token_hex(4)}"
    _active.add(workdir.name)
    try:
        workdir.mkdir(mode=0o700)
        temporary = workdir / final.name
        yield temporary
        if not temporary.is_file():
            raise FileNotFoundError(f"nothing was written to {temporary} (the temporary of {final})")
        _fsync(temporary)
        if not overwrite and final.exists():
            raise FileExistsError(f"{final} appeared while it was being written (another writer?)")
        os.replace(temporary, final)  # also onto a read-only file: renaming needs only the directory's permission
        _fsync(final.parent)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        _active.discard(workdir.name)


def _writer_running(pid: int, name: str) -> bool:
    if pid == os.getpid():
        return name in _active  # else an earlier process had our pid (containers restart with the same pids)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Delete the temporary directories of `atomic_path` writers on this host that died (SIGKILL, power loss) in
    ``folder`` (and in its subfolders with ``recursive``); return them.

    Those of running writers and of other hosts (a shared file system, where this host cannot tell) are kept.
    """
    removed = []
    for directory, subdirectories, _ in os.walk(folder):
        for name in list(subdirectories):
            match = _TMP_DIR.fullmatch(name)
            if match is None:
                continue
            subdirectories.remove(name)  # never walk into a temporary
            if match["host"] == _HOST and not _writer_running(int(match["pid"]), name):
                shutil.rmtree(Path(directory, name), ignore_errors=True)
                removed.append(Path(directory, name))
        if not recursive:
            break
    return removed


def save_safetensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray],
                     metadata: Mapping[str, str] | None = None, overwrite: bool = False) -> Path:
    """Write one safetensors file through `atomic_path` (``metadata``: safetensors' string-to-string header)."""
    with atomic_path(path, overwrite) as temporary:
        save_file(dict(tensors), str(temporary), metadata=None if metadata is None else dict(metadata))
    return Path(path)


def load_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of a safetensors file; a missing, truncated or corrupt file raises `CheckpointError` naming it."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path} does not exist")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is corrupt or not a safetensors file: {err}") from err


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoints: <stem>.safetensors + <stem>.json
# ----------------------------------------------------------------------------------------------------------------------
def checkpoint_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """(tensors file, sidecar) of a checkpoint given by its stem, its ``.safetensors`` path or its ``.json`` path."""
    path = Path(path)
    if path.suffix in (TENSORS_SUFFIX, SIDECAR_SUFFIX):
        path = path.with_suffix("")
    return path.with_name(path.name + TENSORS_SUFFIX), path.with_name(path.name + SIDECAR_SUFFIX)


def is_complete(path: str | os.PathLike) -> bool:
    """True when both files of the checkpoint exist (the sidecar is written last, so it marks completion)."""
    tensors_path, sidecar = checkpoint_paths(path)
    return sidecar.is_file() and tensors_path.is_file()


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def save_checkpoint(path: str | os.PathLike, tensors: Mapping[str, np.ndarray], metadata: Mapping,
                    overwrite: bool = False) -> Path:
    """Write ``<stem>.safetensors`` and then its sidecar ``<stem>.json``, each atomically; return the tensors path.

    ``metadata`` must be JSON-serialisable (checked before anything is written). An existing checkpoint raises
    `FileExistsError` unless ``overwrite``; then its sidecar is deleted first, so a crash leaves the old checkpoint
    incomplete rather than its sidecar describing new tensors.
    """
    tensors_path, sidecar = checkpoint_paths(path)
    if not overwrite and (tensors_path.exists() or sidecar.exists()):
        raise FileExistsError(f"checkpoint {tensors_path} already exists (pass overwrite=True to replace it)")
    arrays = {name: np.asarray(array, order="C") for name, array in tensors.items()}  # keeps 0-d shapes
    bad = [name for name, array in arrays.items() if array.dtype == object]
    if bad:
        raise TypeError(f"checkpoint {tensors_path}: tensors {bad} are not numeric arrays")
    try:
        user_metadata = json.loads(json.dumps(dict(metadata)))
    except (TypeError, ValueError) as err:
        raise TypeError(f"checkpoint {sidecar}: metadata is not JSON-serialisable ({err})") from err
    if overwrite:
        sidecar.unlink(missing_ok=True)
    save_safetensors(tensors_path, arrays, overwrite=overwrite)
    record = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "tensors_file": tensors_path.name,
        "tensors_bytes": tensors_path.stat().st_size,
        "tensors_sha256": _sha256(tensors_path),  # read back from the page cache: ~0.4 s per 500 MB
        "tensors": {name: {"shape": list(a.shape), "dtype": str(a.dtype)} for name, a in arrays.items()},
        "metadata": user_metadata,
    }
    with atomic_path(sidecar, overwrite) as temporary:
        temporary.write_text(json.dumps(record, indent=1), encoding="utf-8")
    return tensors_path


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
    version = record.get("version")
    if version not in range(1, FORMAT_VERSION + 1):
        raise CheckpointError(f"{sidecar} has {FORMAT_NAME} version {version!r}; this code reads 1 to {FORMAT_VERSION}")
    required = ("tensors_bytes", "tensors", "metadata") + (("tensors_sha256",) if version >= 2 else ())
    missing = [key for key in required if key not in record]
    if missing:
        raise CheckpointError(f"checkpoint sidecar {sidecar} lacks {missing}")
    return record


def read_metadata(path: str | os.PathLike) -> dict:
    """The caller's metadata of a checkpoint, from its sidecar alone (the tensors file is not read)."""
    return _read_sidecar(*checkpoint_paths(path))["metadata"]


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """Read a checkpoint given by stem, ``.safetensors`` or ``.json`` path; return ``(tensors, metadata)``.

    Raises `CheckpointError` naming the file when it is missing, incomplete (no sidecar), truncated, corrupt (its
    checksum differs from the sidecar's) or when its arrays disagree with the names and shapes in the sidecar.
    """
    tensors_path, sidecar = checkpoint_paths(path)
    record = _read_sidecar(tensors_path, sidecar)
    if not tensors_path.is_file():
        raise CheckpointError(f"checkpoint {tensors_path} is missing (its sidecar {sidecar} exists)")
    size = tensors_path.stat().st_size
    if size != record["tensors_bytes"]:
        raise CheckpointError(f"checkpoint {tensors_path} has {size} bytes, its sidecar says {record['tensors_bytes']}")
    if "tensors_sha256" in record and _sha256(tensors_path) != record["tensors_sha256"]:
        raise CheckpointError(f"checkpoint {tensors_path} is corrupt: its SHA-256 differs from the one recorded in "
                              f"{sidecar.name} when it was written")
    tensors = load_safetensors(tensors_path)
    recorded = {name: spec["shape"] for name, spec in record["tensors"].items()}
    check_names(recorded, tensors, f"checkpoint {tensors_path} does not match its sidecar {sidecar.name}")
    return tensors, record["metadata"]


# ----------------------------------------------------------------------------------------------------------------------
# Names and shapes
# ----------------------------------------------------------------------------------------------------------------------
def _shape(value: Any) -> tuple:
    return tuple(value.shape) if hasattr(value, "shape") else tuple(value)


class LoadResult(NamedTuple):
    """Names that do not line up between what something expects and what it is given."""

    missing: list[str]     # expected, not given
    unexpected: list[str]  # given, not expected
    mismatched: list[str]  # "name: (given shape) vs expected (shape)"

    def check(self, what: str, limit: int = 20) -> None:
        """Raise one `CheckpointError` ``"<what>: 1 missing [..]; 2 unexpected [..]; 1 shape mismatch [..]"`` if any
        name does not fit; ``what`` says what does not fit what (naming the file when there is one)."""
        parts = []
        for label, names in zip(("missing", "unexpected", "shape mismatch"), self):
            if names:
                shown = ", ".join(names[:limit]) + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")
                parts.append(f"{len(names)} {label} [{shown}]")
        if parts:
            raise CheckpointError(f"{what}: {'; '.join(parts)}")


def compare_names(expected: Mapping[str, Any], given: Mapping[str, Any]) -> LoadResult:
    """Compare names and shapes; the values of both mappings are arrays, tensors, Parameters or shape tuples."""
    return LoadResult(
        missing=sorted(name for name in expected if name not in given),
        unexpected=sorted(name for name in given if name not in expected),
        mismatched=sorted(f"{name}: {_shape(given[name])} vs expected {_shape(expected[name])}"
                          for name in expected if name in given and _shape(given[name]) != _shape(expected[name])),
    )


def check_names(expected: Mapping[str, Any], given: Mapping[str, Any], what: str) -> None:
    """`compare_names`, raising one `CheckpointError` that lists every name that does not fit (`LoadResult.check`)."""
    compare_names(expected, given).check(what)


# ----------------------------------------------------------------------------------------------------------------------
# Model parameters <-> arrays
# ----------------------------------------------------------------------------------------------------------------------
def tensor_to_numpy(tensor: ms.Tensor) -> np.ndarray:
    """A NumPy copy of ``tensor``; bfloat16 (which NumPy lacks) comes back as float32."""
    if tensor.dtype == ms.bfloat16:
        tensor = tensor.astype(ms.float32)
    return tensor.asnumpy().copy()  # asnumpy() can share memory with the tensor


def copy_into(param: ms.Parameter, array: np.ndarray) -> None:
    """Write ``array`` into ``param`` in place, cast to the parameter's dtype (bfloat16 included).

    copy_ writes into the parameter's memory, so graphs that ms.jit compiled before see the new value; set_data
    would swap in a new tensor those graphs never see, and ops.assign has no bfloat16 kernel on CPU.
    """
    param.copy_(ms.Tensor(np.ascontiguousarray(array)))


def state_dict(cell: ms.nn.Cell) -> dict[str, np.ndarray]:
    """Every parameter of ``cell`` as ``{parameter name: np.ndarray copy}`` (bfloat16 becomes float32)."""
    return {param.name: tensor_to_numpy(param) for param in cell.get_parameters()}


def load_state_dict(cell: ms.nn.Cell, tensors: Mapping[str, np.ndarray], strict: bool = True,
                    source: str | os.PathLike | None = None) -> LoadResult:
    """Copy ``tensors`` into the parameters of ``cell`` with `copy_into` (in place, cast to each parameter's dtype).

    With ``strict=True`` any missing name, unexpected name or shape mismatch raises one `CheckpointError` listing all
    of them (naming ``source``, the file the tensors came from, when given) and nothing is loaded. With
    ``strict=False`` the parameters that fit are loaded and the rest is returned.
    """
    params = {param.name: param for param in cell.get_parameters()}
    result = compare_names(params, tensors)
    if strict:
        result.check(f"{source or 'state dict'} does not fit {type(cell).__name__}")
    for name, param in params.items():
        if name in tensors and _shape(tensors[name]) == _shape(param):
            copy_into(param, tensors[name])
    return result
