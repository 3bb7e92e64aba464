"""Read Hugging Face-format checkpoint directories (config.json + safetensors, single file or sharded).

Shared by the text encoders and the CLIP vision tower, so it lives outside any one model package. Weights are read
lazily per tensor, so the decoder half of an encoder-decoder checkpoint is never loaded.
Every parameter of the target cell must be found with the right shape, or loading fails naming what is wrong
(`mg.io.check_names`) before any weight is copied.
"""
import json
from collections import defaultdict
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from mindspore import nn
from safetensors import safe_open

from mg.io import check_names, copy_into

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


def checkpoint_dir(path) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint directory {str(path)!r} does not exist")
    return path


def read_config(path) -> dict:
    """config.json of a checkpoint directory as a dict."""
    file = checkpoint_dir(path) / "config.json"
    if not file.is_file():
        raise FileNotFoundError(f"{file}: missing (a Hugging Face-format checkpoint directory needs config.json)")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{file}: not valid JSON ({e})") from e


def weight_files(path) -> dict:
    """Map each tensor name to the safetensors file holding it."""
    path = checkpoint_dir(path)
    if (path / SINGLE_FILE).is_file():
        with safe_open(path / SINGLE_FILE, framework="np") as f:
            return {name: path / SINGLE_FILE for name in f.keys()}
    if (path / INDEX_FILE).is_file():
        index = json.loads((path / INDEX_FILE).read_text())
        return {name: path / shard for name, shard in index["weight_map"].items()}
    raise FileNotFoundError(
        f"{path}: no {SINGLE_FILE} or {INDEX_FILE} (only safetensors checkpoints are read; "
        "convert pytorch_model.bin with transformers' save_pretrained(safe_serialization=True))"
    )


def read_weights(
    path,
    rename: Callable[[str], Optional[str]],
    adapt: Optional[Callable[[str, np.ndarray], np.ndarray]] = None,
) -> tuple[dict, Callable[[str], np.ndarray]]:
    """({parameter name: shape as stored}, read): what a checkpoint holds for a model, before reading any weight.

    rename: checkpoint name -> parameter name, or None for tensors this model does not use.
    adapt: optional (parameter name, array) -> array that `read` applies; the shapes stay those in the files.
    Shapes come from the file headers, so a caller can check names and shapes (and build a model) first;
    `read(name)` then opens the file and reads that one tensor, so no more than one is ever held.
    """
    sources = {}
    for ckpt_name, file in weight_files(path).items():
        name = rename(ckpt_name)
        if name is not None:
            sources.setdefault(name, (ckpt_name, file))  # tied copies (T5's shared / embed_tokens) are equal
    by_file = defaultdict(list)
    for name, (ckpt_name, file) in sources.items():
        by_file[file].append((name, ckpt_name))
    shapes = {}
    for file, names in by_file.items():
        with safe_open(file, framework="np") as f:
            shapes.update({name: tuple(f.get_slice(ckpt_name).get_shape()) for name, ckpt_name in names})

    def read(name: str) -> np.ndarray:
        ckpt_name, file = sources[name]
        with safe_open(file, framework="np") as f:
            array = f.get_tensor(ckpt_name)
        return array if adapt is None else adapt(name, array)

    return shapes, read


def load_weights(
    cell: nn.Cell,
    path,
    rename: Callable[[str], Optional[str]],
    adapt: Optional[Callable[[str, np.ndarray, tuple], np.ndarray]] = None,
) -> None:
    """Copy checkpoint tensors into `cell`'s parameters, in place (`mg.io.copy_into`: compiled graphs see them).

    rename: checkpoint name -> parameter name, or None for tensors this model does not use.
    adapt: optional (parameter name, array, target shape) -> array, called for a tensor whose shape differs from its
        parameter's, for deliberate resizes (CLIP positions); what it returns must then fit.
    Names and shapes are checked before anything is copied (only tensors to adapt are read for that), and tensors
    are read one at a time.
    """
    params = dict(cell.parameters_and_names())

    def fit(name: str, array: np.ndarray) -> np.ndarray:
        target = tuple(params[name].shape) if name in params else array.shape
        return array if array.shape == target else adapt(name, array, target)

    shapes, read = read_weights(path, rename, None if adapt is None else fit)
    adapted = {name: read(name) for name, shape in shapes.items()
               if adapt is not None and name in params and shape != tuple(params[name].shape)}
    shapes.update({name: tuple(array.shape) for name, array in adapted.items()})
    check_names(params, shapes, f"{path} does not fit {type(cell).__name__} (does config.json match the weights?)")
    for name in shapes:
        copy_into(params[name], adapted.pop(name) if name in adapted else read(name))


def interpolate_positions(table: np.ndarray, length: int) -> np.ndarray:
    """Linearly resample a (N, C) position table to (length, C), keeping both end rows (align-corners).

    New position j reads old position j * (N - 1) / (length - 1), blending its two neighbours.
    """
    n = table.shape[0]
    src = np.arange(length, dtype=np.float64) * (n - 1) / max(length - 1, 1)
    lo = np.minimum(np.floor(src).astype(np.int64), n - 1)
    hi = np.minimum(lo + 1, n - 1)
    w = (src - lo)[:, None]
    return ((1.0 - w) * table[lo] + w * table[hi]).astype(table.dtype)
