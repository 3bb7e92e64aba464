"""Saving and loading a TAE: weights in safetensors, the config in a sidecar JSON (`<file>.json`)."""
import json
import os
from pathlib import Path

import numpy as np
from mindspore import Tensor
from safetensors.numpy import load_file, save_file

from mg.models.tae.autoencoder import TemporalAutoencoder
from mg.models.tae.config import TAEConfig


def config_path(path):
    return Path(str(path) + ".json")


def tae_state_dict(tae):
    """name -> float32 numpy array of every parameter."""
    return {name: p.asnumpy() for name, p in tae.parameters_and_names()}


def save_tae(tae, path, overwrite=False, extra=None):
    """Write `path` (safetensors) and `path.json` ({"config": ..., **extra}) via temporary files renamed into place."""
    path = Path(path)
    if not overwrite and (path.exists() or config_path(path).exists()):
        raise FileExistsError(f"save_tae: {path} (or its .json) exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tae_state_dict(tae), str(tmp))
    os.replace(tmp, path)
    tmp_json = path.with_name(path.name + ".json.tmp")
    tmp_json.write_text(json.dumps({"config": tae.config.to_dict(), **(extra or {})}, indent=2))
    os.replace(tmp_json, config_path(path))


def load_tae_weights(tae, state, source="state dict"):
    """Copy `state` (name -> array) into `tae`, requiring exactly the same names and shapes."""
    params = dict(tae.parameters_and_names())
    missing, unexpected = sorted(set(params) - set(state)), sorted(set(state) - set(params))
    if missing or unexpected:
        raise ValueError(f"{source}: TAE weights do not match the model; missing {missing[:8]} "
                         f"({len(missing)}), unexpected {unexpected[:8]} ({len(unexpected)})")
    for name, p in params.items():
        if tuple(state[name].shape) != tuple(p.shape):
            raise ValueError(f"{source}: {name} has shape {tuple(state[name].shape)}, model expects {tuple(p.shape)}")
        p.copy_(Tensor(np.ascontiguousarray(state[name], dtype=np.float32)))  # in place: jitted graphs see it
    return tae


def load_tae_config(path):
    """The TAEConfig in the sidecar `path.json` of a TAE checkpoint (no weights are read)."""
    meta = config_path(path)
    if not meta.is_file():
        raise FileNotFoundError(f"TAE checkpoint {path} has no sidecar config {meta}; pass config=TAEConfig(...)")
    try:
        return TAEConfig.from_dict(json.loads(meta.read_text())["config"])
    except (KeyError, ValueError, TypeError) as err:
        raise ValueError(f"bad TAE config in {meta}: {err}") from err


def load_tae(path, config=None):
    """A TemporalAutoencoder from `path` (safetensors) and its sidecar `path.json` (or an explicit TAEConfig)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_tae: no checkpoint at {path}")
    if config is None:
        config = load_tae_config(path)
    return load_tae_weights(TemporalAutoencoder(config), load_file(str(path)), source=str(path))
