"""Sharded training checkpoints: every rank writes only its own slices; any layout reads back the piece it needs.

A checkpoint is a directory ``<ckpt dir>/step_<step:09d>/``:

    shard-tp<t:03d>-dp<d:05d>.safetensors   one per (tp index t, dp index d) of the layout that saved it
    shard-tp<t:03d>-dp<d:05d>.json          its sidecar: sha256 (of the array's bytes), dtype and shape per tensor
    manifest.json                           written last: tp, dp, the run's layout, how every tensor is sliced, the
                                            sha256 of every sidecar, and free metadata

A split tensor is stored in shard (t, d) as ``shard_flat(shard_tp(full, tp_mode, parts, t, T), d, D)``: the dp
flat slice of the tp-local piece, whatever ZeRO stage the run used. An unsplit tensor (a step counter) is stored
whole in shard (0, 0) only. ``tp_mode`` is the tensor's slicing rule as under any tp > 1, also when the saving run
had tp = 1, so that a reader with another tp can cut its piece.

Commit protocol: every rank writes its shard into the hidden sibling ``.step_<step:09d>.partial/`` (`partial_dir`),
each file atomically, the sidecar after the tensors; then one process calls `commit`, which checks that every shard
is there, writes manifest.json and renames the directory to its final name. A directory named ``step_N`` therefore
always holds a manifest; a crash leaves only a ``.partial`` directory, which `CheckpointManager.cleanup` removes.

Reading: `ShardedCheckpoint.read(key, Piece(...))` returns the piece a rank of any layout wants. Under the saving
layout that is one stored tensor; otherwise the piece's elements are mapped to full-array indices and from there to
(stored shard, offset), and only the stored tensors that overlap are read (each verified against its sidecar).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

import numpy as np
from safetensors import SafetensorError, safe_open

from mg.io import CheckpointError, atomic_path, save_safetensors
from mg.parallel.layers import TP_MODES, flat_shard_length

FORMAT_NAME = "mg-sharded-checkpoint"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_CHUNK = 1 << 22  # a resharding read maps indices this many elements at a time: bounded int64 temporaries


@dataclass(frozen=True)
class TensorLayout:
    """How a tensor is sliced: its single-process shape, its TP rule (`mg.parallel.layers.shard_tp`: None, "column"
    or "row", with `parts` fused blocks) and whether it is split at all (False: stored whole, once)."""

    full_shape: tuple
    tp_mode: Optional[str] = None
    parts: int = 1
    split: bool = True

    def __post_init__(self):
        object.__setattr__(self, "full_shape", tuple(int(n) for n in self.full_shape))
        if self.tp_mode not in TP_MODES:
            raise ValueError(f"tp_mode must be one of {TP_MODES}, got {self.tp_mode!r}")
        if not isinstance(self.parts, int) or self.parts < 1:
            raise ValueError(f"parts must be an integer >= 1, got {self.parts!r}")
        if self.tp_mode == "column" and (not self.full_shape or self.full_shape[0] % self.parts):
            raise ValueError(f"a column-split tensor of shape {self.full_shape} cannot hold {self.parts} equal parts")

    def kind(self, tp: int) -> Optional[str]:
        """The slicing that actually happens over `tp` ranks (a row rule leaves vectors whole)."""
        if tp == 1 or self.tp_mode is None or (self.tp_mode == "row" and len(self.full_shape) != 2):
            return None
        return self.tp_mode

    def local_shape(self, tp: int) -> tuple:
        """The shape of one TP rank's piece over `tp` ranks; ValueError when `tp` does not divide it."""
        kind, shape = self.kind(tp), self.full_shape
        if kind == "column":
            if shape[0] % (self.parts * tp):
                raise ValueError(f"{shape[0]} rows in {self.parts} parts cannot be split over tp={tp}")
            return (shape[0] // tp,) + shape[1:]
        if kind == "row":
            if shape[1] % tp:
                raise ValueError(f"{shape[1]} columns cannot be split over tp={tp}")
            return (shape[0], shape[1] // tp)
        return shape

    def stored_length(self, tp: int, dp: int) -> int:
        """Elements of one stored tensor of a split tensor saved by a (tp, dp) layout."""
        return flat_shard_length(math.prod(self.local_shape(tp)), dp)

    def to_json(self) -> dict:
        return {"full_shape": list(self.full_shape), "tp_mode": self.tp_mode, "parts": self.parts,
                "split": self.split}


@dataclass(frozen=True)
class Piece:
    """What a reader wants of a tensor: the tp-local piece of TP rank `tp_index` of `tp_size` and, when `flat`, its
    flat zero-padded slice `dp_index` of `dp_size` (`shard_flat`), as a rank of that layout holds it."""

    tp_index: int = 0
    tp_size: int = 1
    dp_index: int = 0
    dp_size: int = 1
    flat: bool = False

    def __post_init__(self):
        for index, size in ((self.tp_index, self.tp_size), (self.dp_index, self.dp_size)):
            if not 0 <= index < size:
                raise ValueError(f"piece index {index} is not within a group of size {size}: {self}")


# ----------------------------------------------------------------------------------------------------------------------
# Index arithmetic: local flat positions of a TP piece <-> flat indices of the full array
# ----------------------------------------------------------------------------------------------------------------------
def _local_to_full(positions, layout, t, tp):
    """Flat indices in the full array of flat `positions` in TP rank t's piece (the inverse of `shard_tp`)."""
    kind, shape = layout.kind(tp), layout.full_shape
    if kind == "column":
        inner = math.prod(shape[1:])
        chunk = shape[0] // (layout.parts * tp)  # rows of one fused part on one rank
        row, col = np.divmod(positions, inner)
        part, j = np.divmod(row, chunk)
        return (part * (shape[0] // layout.parts) + t * chunk + j) * inner + col
    if kind == "row":
        width = shape[1] // tp
        row, j = np.divmod(positions, width)
        return row * shape[1] + t * width + j
    return positions


def _full_to_local(indices, layout, tp, replica):
    """(TP rank, flat position in its piece) holding each full-array flat index; a tensor TP does not split is
    whole on every rank, and is taken from rank `replica`."""
    kind, shape = layout.kind(tp), layout.full_shape
    if kind == "column":
        inner = math.prod(shape[1:])
        chunk = shape[0] // (layout.parts * tp)
        row, col = np.divmod(indices, inner)
        part, rest = np.divmod(row, shape[0] // layout.parts)
        rank, j = np.divmod(rest, chunk)
        return rank, (part * chunk + j) * inner + col
    if kind == "row":
        width = shape[1] // tp
        row, col = np.divmod(indices, shape[1])
        rank, j = np.divmod(col, width)
        return rank, row * width + j
    return np.full_like(indices, replica), indices


# ----------------------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------------------
def shard_name(t: int, d: int) -> str:
    """The tensors file of shard (tp index t, dp index d)."""
    return f"shard-tp{t:03d}-dp{d:05d}.safetensors"


def sidecar_name(t: int, d: int) -> str:
    return f"shard-tp{t:03d}-dp{d:05d}.json"


def _array_sha256(array: np.ndarray) -> str:
    return hashlib.sha256(memoryview(np.asarray(array, order="C"))).hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def partial_dir(final_dir: str | os.PathLike) -> Path:
    """The hidden sibling ``.<name>.partial`` every rank writes its shard into (created if missing)."""
    final = Path(final_dir)
    partial = final.parent / f".{final.name}.partial"
    partial.mkdir(parents=True, exist_ok=True)
    return partial


def write_shard(partial: str | os.PathLike, t: int, d: int, tensors: Mapping[str, np.ndarray]) -> Path:
    """Write shard (t, d): its tensors file, then its sidecar, each atomically; return the tensors file's path."""
    arrays = {key: np.asarray(array, order="C") for key, array in tensors.items()}  # keeps 0-d shapes
    bad = [key for key, array in arrays.items() if array.dtype == object]
    if bad:
        raise TypeError(f"shard {shard_name(t, d)}: tensors {bad} are not numeric arrays")
    path = save_safetensors(Path(partial) / shard_name(t, d), arrays)
    record = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "shard": shard_name(t, d),
              "tensors": {key: {"sha256": _array_sha256(a), "dtype": str(a.dtype), "shape": list(a.shape)}
                          for key, a in arrays.items()}}
    with atomic_path(Path(partial) / sidecar_name(t, d)) as temporary:
        temporary.write_text(json.dumps(record, indent=1), encoding="utf-8")
    return path


def _read_json(path: Path, what: str) -> tuple[bytes, dict]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{what} {path} is missing") from None
    except OSError as err:
        raise CheckpointError(f"{what} {path} is unreadable: {err}") from err
    try:
        record = json.loads(raw)
    except ValueError as err:
        raise CheckpointError(f"{what} {path} is not valid JSON: {err}") from err
    if not isinstance(record, dict):
        raise CheckpointError(f"{what} {path} does not hold a JSON object")
    return raw, record


def _json_dict(value, what: str) -> dict:
    try:
        return json.loads(json.dumps(dict(value or {})))
    except (TypeError, ValueError) as err:
        raise TypeError(f"{what} is not a JSON-serialisable dict ({err})") from err


def _expected_shapes(layouts: Mapping[str, TensorLayout], tp: int, dp: int, t: int, d: int) -> dict[str, list]:
    """{key: stored shape} of shard (t, d)."""
    shapes = {}
    for key, layout in layouts.items():
        if layout.split:
            try:
                shapes[key] = [layout.stored_length(tp, dp)]
            except ValueError as err:
                raise ValueError(f"tensor {key!r} cannot be sharded over tp={tp}: {err}") from None
    if (t, d) == (0, 0):
        shapes.update({key: list(layout.full_shape) for key, layout in layouts.items() if not layout.split})
    return shapes


def build_manifest(partial: str | os.PathLike, tp: int, dp: int, layouts: Mapping[str, TensorLayout],
                   metadata: Mapping | None = None, layout_info: Mapping | None = None) -> dict:
    """The manifest of the shards in `partial`, written by a `tp` x `dp` layout; checks that every shard's sidecar
    holds exactly the keys and stored shapes `layouts` imply, and records each sidecar's sha256."""
    partial = Path(partial)
    if not (isinstance(tp, int) and isinstance(dp, int) and tp >= 1 and dp >= 1):
        raise ValueError(f"tp and dp must be integers >= 1, got tp={tp!r}, dp={dp!r}")
    shards = {}
    for t in range(tp):
        for d in range(dp):
            raw, record = _read_json(partial / sidecar_name(t, d), "shard sidecar")
            stored = {key: spec.get("shape") for key, spec in record.get("tensors", {}).items()}
            expected = _expected_shapes(layouts, tp, dp, t, d)
            if stored != expected:
                wrong = sorted(k for k in expected.keys() | stored.keys() if stored.get(k) != expected.get(k))
                raise CheckpointError(f"shard sidecar {partial / sidecar_name(t, d)} does not match the tensor layouts "
                                      f"(keys missing, unexpected or of the wrong stored shape: {wrong[:20]})")
            shards[shard_name(t, d)] = hashlib.sha256(raw).hexdigest()
    return {"format": FORMAT_NAME, "version": FORMAT_VERSION, "tp": tp, "dp": dp,
            "layout": _json_dict(layout_info, "the layout info"),
            "tensors": {key: layout.to_json() for key, layout in layouts.items()},
            "shards": shards, "metadata": _json_dict(metadata, "the checkpoint metadata")}


def commit(partial: str | os.PathLike, final: str | os.PathLike, manifest: Mapping) -> Path:
    """Finish a sharded checkpoint: check every shard of the manifest's layout is in `partial`, write manifest.json
    there (atomic, fsynced), then rename `partial` to `final`. An existing `final` is refused."""
    partial, final = Path(partial), Path(final)
    if final.exists():
        raise FileExistsError(f"cannot commit {partial} as {final}: {final} already exists")
    for t in range(manifest["tp"]):
        for d in range(manifest["dp"]):
            for name in (shard_name(t, d), sidecar_name(t, d)):
                if not (partial / name).is_file():
                    raise CheckpointError(f"cannot commit {partial}: {name} is missing")
    with atomic_path(partial / MANIFEST) as temporary:
        temporary.write_text(json.dumps(dict(manifest), indent=1), encoding="utf-8")
    os.rename(partial, final)
    _fsync_dir(final.parent)
    return final


def remove(path: str | os.PathLike) -> None:
    """Delete a sharded checkpoint directory, its manifest first (and that fsynced), so an interrupted removal
    leaves a directory that is not taken for a complete checkpoint."""
    path = Path(path)
    (path / MANIFEST).unlink(missing_ok=True)
    _fsync_dir(path)
    shutil.rmtree(path)


def is_sharded_checkpoint(path: str | os.PathLike) -> bool:
    """True for a directory holding a manifest.json (committed, so complete)."""
    return Path(path).is_dir() and (Path(path) / MANIFEST).is_file()


# ----------------------------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------------------------
class ShardedCheckpoint:
    """A committed sharded checkpoint directory, opened for reading (the manifest is read and checked here; shard
    files are opened only by `read`, only those a piece needs). Attributes: `tp`, `dp` (the saving layout's
    sizes), `layout_info` (its free description), `metadata`, `layouts` ({key: TensorLayout})."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not self.path.is_dir():
            raise CheckpointError(f"sharded checkpoint {self.path} does not exist or is not a directory")
        _, record = _read_json(manifest_path, "manifest")
        if record.get("format") != FORMAT_NAME or record.get("version") != FORMAT_VERSION:
            raise CheckpointError(f"{manifest_path} is not an {FORMAT_NAME} version {FORMAT_VERSION} manifest "
                                  f"(format {record.get('format')!r}, version {record.get('version')!r})")
        missing = [k for k in ("tp", "dp", "layout", "tensors", "shards", "metadata") if k not in record]
        if missing:
            raise CheckpointError(f"manifest {manifest_path} lacks {missing}")
        if not isinstance(record["tensors"], dict) or not isinstance(record["shards"], dict):
            raise CheckpointError(f"manifest {manifest_path}: 'tensors' and 'shards' must be JSON objects")
        self.tp, self.dp = record["tp"], record["dp"]
        if not all(isinstance(n, int) and n >= 1 for n in (self.tp, self.dp)):
            raise CheckpointError(f"manifest {manifest_path}: tp and dp must be integers >= 1, got {self.tp!r}, "
                                  f"{self.dp!r}")
        self.layouts = {}
        for key, spec in record["tensors"].items():
            try:
                self.layouts[key] = TensorLayout(**spec)
            except (TypeError, ValueError) as err:
                raise CheckpointError(f"manifest {manifest_path}: tensor {key!r} has a malformed layout ({err})") \
                    from err
        self.shards = record["shards"]
        for t in range(self.tp):
            for d in range(self.dp):
                if shard_name(t, d) not in self.shards:
                    raise CheckpointError(f"manifest {manifest_path} lists no checksum for {shard_name(t, d)}")
                for name in (shard_name(t, d), sidecar_name(t, d)):
                    if not (self.path / name).is_file():
                        raise CheckpointError(f"sharded checkpoint {self.path}: shard file {name} is missing")
        self.metadata = record["metadata"]
        self.layout_info = record["layout"]
        self._sidecars = {}

    def keys(self) -> list[str]:
        return list(self.layouts)

    def layout(self, key: str) -> TensorLayout:
        if key not in self.layouts:
            raise CheckpointError(f"sharded checkpoint {self.path} holds no tensor {key!r}")
        return self.layouts[key]

    def _sidecar(self, t: int, d: int) -> dict:
        """The tensor records of shard (t, d), its sidecar checked against the manifest's sha256."""
        if (t, d) not in self._sidecars:
            path = self.path / sidecar_name(t, d)
            raw, record = _read_json(path, "shard sidecar")
            if hashlib.sha256(raw).hexdigest() != self.shards[shard_name(t, d)]:
                raise CheckpointError(f"shard sidecar {path} is corrupt: its sha256 differs from the one in {MANIFEST}")
            self._sidecars[(t, d)] = record.get("tensors", {})
        return self._sidecars[(t, d)]

    def _dtype(self, key: str) -> str:
        spec = self._sidecar(0, 0).get(key)
        if spec is None:
            raise CheckpointError(f"shard sidecar {self.path / sidecar_name(0, 0)} has no tensor {key!r}")
        return spec["dtype"]

    def _stored(self, t: int, d: int, key: str, shape: tuple) -> np.ndarray:
        """The tensor `key` of shard (t, d), verified against its sidecar and the `shape` the layout implies."""
        path = self.path / shard_name(t, d)
        spec = self._sidecar(t, d).get(key)
        if spec is None or tuple(spec["shape"]) != tuple(shape):
            raise CheckpointError(f"shard {path}: tensor {key!r} is not in its sidecar with the shape {shape} that "
                                  f"its layout implies")
        try:
            with safe_open(str(path), framework="numpy") as f:
                array = f.get_tensor(key)
        except (SafetensorError, OSError, ValueError, KeyError) as err:
            raise CheckpointError(f"shard {path}: cannot read tensor {key!r} ({err})") from err
        if (list(array.shape) != spec["shape"] or str(array.dtype) != spec["dtype"]
                or _array_sha256(array) != spec["sha256"]):
            raise CheckpointError(f"shard {path} is corrupt: tensor {key!r} differs from its sidecar "
                                  f"{sidecar_name(t, d)} (sha256, dtype or shape)")
        return array

    def read(self, key: str, piece: Piece = Piece()) -> np.ndarray:
        """The `piece` of tensor `key` (an unsplit tensor is returned whole, whatever the piece)."""
        layout = self.layout(key)
        if not layout.split:
            return self._stored(0, 0, key, layout.full_shape)
        stored_length = layout.stored_length(self.tp, self.dp)
        if piece.flat and (piece.tp_size, piece.dp_size) == (self.tp, self.dp):
            return self._stored(piece.tp_index, piece.dp_index, key, (stored_length,))
        try:
            local_shape = layout.local_shape(piece.tp_size)
        except ValueError as err:
            raise ValueError(f"tensor {key!r} of {self.path} cannot be read as {piece}: {err}") from None
        numel = math.prod(local_shape)
        length = flat_shard_length(numel, piece.dp_size) if piece.flat else numel
        start = piece.dp_index * length if piece.flat else 0
        out = np.zeros(length, dtype=self._dtype(key))
        stored = {}
        for begin in range(start, start + length, _CHUNK):
            positions = np.arange(begin, min(begin + _CHUNK, start + length, numel), dtype=np.int64)  # no padding
            full = _local_to_full(positions, layout, piece.tp_index, piece.tp_size)
            rank, local = _full_to_local(full, layout, self.tp, piece.tp_index % self.tp)
            source = rank * self.dp + local // stored_length
            offset = local % stored_length
            for s in np.unique(source):
                t, d = divmod(int(s), self.dp)
                if (t, d) not in stored:
                    stored[(t, d)] = self._stored(t, d, key, (stored_length,))
                mask = source == s
                out[positions[mask] - start] = stored[(t, d)][offset[mask]]
        return out if piece.flat else out.reshape(local_shape)

    def read_full(self, key: str) -> np.ndarray:
        """The whole single-process array of `key`."""
        return self.read(key, Piece())


def consolidate(path: str | os.PathLike, prefer_ema: bool = True) -> tuple[dict[str, np.ndarray], dict]:
    """(model weights by bare parameter name, metadata) of a sharded checkpoint, in one process, one tensor at a
    time: the `ema/` namespace if present and preferred, else `model/`."""
    checkpoint = ShardedCheckpoint(path)
    for space in ("ema", "model") if prefer_ema else ("model",):
        keys = [key for key in checkpoint.keys() if key.startswith(f"{space}/")]
        if keys:
            return {key[len(space) + 1:]: checkpoint.read_full(key) for key in keys}, checkpoint.metadata
    raise CheckpointError(f"sharded checkpoint {path} holds no model weights (no 'ema/' or 'model/' tensors)")
