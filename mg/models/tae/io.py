"""Saving and loading a TAE.

A TAE checkpoint is a checkpoint of mg.io, `tae.safetensors` + `tae.json`, whose metadata holds `tae_config` (the
TAEConfig fields). Also read: a bare safetensors file, with its config either in `<file>.json` ({"config": ...},
the layout TAEs were saved in before, as in checkpoints/toy and checkpoints/random_tiny) or given explicitly.
"""
import json
from pathlib import Path

from mg.io import (checkpoint_paths, load_checkpoint, load_safetensors, load_state_dict, read_metadata,
                   save_checkpoint, state_dict)
from mg.models.tae.autoencoder import TemporalAutoencoder
from mg.models.tae.config import TAEConfig

CONFIG_KEY = "tae_config"


def _files(path):
    """(tensors file, mg.io sidecar, the `<file>.json` config of the older layout)."""
    tensors_path, sidecar = checkpoint_paths(path)
    return tensors_path, sidecar, Path(f"{tensors_path}.json")


def _config(fields, source):
    try:
        return TAEConfig.from_dict(fields)
    except (KeyError, ValueError, TypeError) as err:
        raise ValueError(f"bad TAE config in {source}: {err}") from err


def save_tae(tae, path, overwrite=False, extra=None):
    """Write `<stem>.safetensors` + `<stem>.json` (metadata: `extra` and `tae_config`); `path` is the stem or the
    `.safetensors` path. An existing checkpoint is refused unless `overwrite`. Returns the `.safetensors` path."""
    return save_checkpoint(path, state_dict(tae), {**(extra or {}), CONFIG_KEY: tae.config.to_dict()},
                           overwrite=overwrite)


def load_tae_config(path):
    """The TAEConfig of a TAE checkpoint, from its sidecar (no weights are read)."""
    tensors_path, sidecar, old_config = _files(path)
    if sidecar.is_file():
        metadata = read_metadata(sidecar)
        if CONFIG_KEY not in metadata:
            raise ValueError(f"bad TAE config in {sidecar}: its metadata has no '{CONFIG_KEY}' (not a TAE checkpoint?)")
        return _config(metadata[CONFIG_KEY], sidecar)
    if old_config.is_file():
        try:
            fields = json.loads(old_config.read_text())["config"]
        except (KeyError, ValueError, TypeError) as err:
            raise ValueError(f"bad TAE config in {old_config}: {err!r}") from err
        return _config(fields, old_config)
    raise FileNotFoundError(f"TAE checkpoint {tensors_path} has no sidecar ({sidecar.name} or {old_config.name}) to "
                            "take its config from; pass config=TAEConfig(...)")


def load_tae(path, config=None):
    """A TemporalAutoencoder from a TAE checkpoint (config from its sidecar unless `config`, a TAEConfig, is given);
    every name and shape is checked, and the checksum of an mg.io checkpoint."""
    tensors_path, sidecar, _ = _files(path)
    if config is None:
        config = load_tae_config(path)
    tensors = load_checkpoint(sidecar)[0] if sidecar.is_file() else load_safetensors(tensors_path)
    tae = TemporalAutoencoder(config)
    load_state_dict(tae, tensors, source=tensors_path)
    return tae
