"""Inflate a diffusers-format image VAE (AutoencoderKL, e.g. the 16-channel SD3/FLUX kind) into the TAE.

Spatial weights are copied (2-D kernels (O, I, kh, kw) become (O, I, 1, kh, kw)); the temporal convs and temporal
attentions the image VAE lacks keep their identity initialisation, so on a static video the TAE reproduces the image
VAE frame by frame.
"""
import json
from pathlib import Path

import numpy as np

from mg.io import load_safetensors, load_state_dict, state_dict
from mg.models.tae.autoencoder import TemporalAutoencoder
from mg.models.tae.config import TAEConfig

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
# diffusers' attention names, including the pre-0.14 ones still found in older checkpoints
_ATTENTION_RENAMES = {".to_out.0.": ".to_out.", ".query.": ".to_q.", ".key.": ".to_k.", ".value.": ".to_v.",
                      ".proj_attn.": ".to_out."}


def config_from_diffusers(cfg, source="config.json"):
    """A TAEConfig from a diffusers AutoencoderKL config dict."""
    try:
        widths = list(cfg["block_out_channels"])
        if any(w % widths[0] for w in widths):
            raise ValueError(f"block_out_channels {widths} are not multiples of the first")
        if cfg.get("in_channels", 3) != cfg.get("out_channels", 3):
            raise ValueError("in_channels and out_channels differ")
        if len(widths) != 4:
            raise ValueError(f"the TAE compresses time 8x and needs 4 levels, got {len(widths)}")
        return TAEConfig(
            in_channels=cfg.get("in_channels", 3), latent_channels=cfg["latent_channels"], base_channels=widths[0],
            channel_multipliers=tuple(w // widths[0] for w in widths), num_res_blocks=cfg.get("layers_per_block", 2),
            norm_groups=cfg.get("norm_num_groups", 32), use_quant_conv=cfg.get("use_quant_conv", True),
            scaling_factor=float(cfg.get("scaling_factor") or 1.0), shift_factor=float(cfg.get("shift_factor") or 0.0))
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{source}: not a usable AutoencoderKL config: {err}") from err


def inflate_image_vae_state(image_state, tae, source="image VAE"):
    """TAE weights: the image VAE's spatial weights (renamed/reshaped) plus the TAE's own temporal parameters."""
    target = state_dict(tae)
    out = {}
    for key, value in image_state.items():
        name = _tae_name(key, target)
        if name is None:
            raise ValueError(f"{source}: weight {key!r} has no place in the TAE (config mismatch or not a VAE?)")
        want = target[name].shape
        if value.size != int(np.prod(want)):
            raise ValueError(f"{source}: {key} has shape {value.shape}, TAE {name} expects {want}")
        out[name] = value.astype(np.float32).reshape(want)  # adds kt=1; squeezes 1x1-conv attention weights
    missing = [n for n in target if n not in out and not _is_temporal(n)]
    if missing:
        raise ValueError(f"{source}: no weights for {missing[:8]} ({len(missing)} spatial tensors missing)")
    return {**{n: v for n, v in target.items() if n not in out}, **out}


def _tae_name(key, target):
    for old, new in _ATTENTION_RENAMES.items():
        key = key.replace(old, new)
    if key in target:
        return key
    module, leaf = key.rsplit(".", 1)
    spatial = f"{module}.spatial.{leaf}"
    return spatial if spatial in target else None


def _is_temporal(name):
    return ".temporal." in name or ".temporal_attentions." in name


def convert_image_vae(path):
    """A TemporalAutoencoder inflated from a diffusers VAE folder (config.json + diffusion_pytorch_model.safetensors)."""
    path = Path(path)
    config_file, weights_file = path / "config.json", path / WEIGHTS_NAME
    for f in (config_file, weights_file):
        if not f.is_file():
            raise FileNotFoundError(f"convert_image_vae: {f} not found (expected a diffusers AutoencoderKL folder)")
    cfg = config_from_diffusers(json.loads(config_file.read_text()), source=str(config_file))
    tae = TemporalAutoencoder(cfg)
    load_state_dict(tae, inflate_image_vae_state(load_safetensors(weights_file), tae, str(weights_file)),
                    source=weights_file)
    return tae
