"""Saving and loading transformer weights.

A DiT checkpoint is a checkpoint of mg.io (safetensors + JSON sidecar) whose metadata holds `dit_config` (the
DiTConfig fields). Its tensors are either the bare parameters (an exported model) or training namespaces `model/...`,
`ema/...`, `optimizer/...`; loading for sampling prefers the EMA weights. Positional tables smaller than the target
model's are expanded (the stage-growth rule of `expand_position_tables`), so a stage-N checkpoint loads into a
stage-N+1 model.
"""
from dataclasses import asdict, replace

from mg.io import CheckpointError, check_names, load_checkpoint, load_state_dict, save_checkpoint, state_dict
from mg.models.dit.config import DiTConfig
from mg.models.dit.embeddings import expand_position_tables
from mg.models.dit.model import MovieGenDiT

TABLES = ("pos_embed.table_t", "pos_embed.table_h", "pos_embed.table_w")


def config_to_dict(config):
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()}


# fields that older checkpoints carry and the configuration no longer has: recompute is applied by the trainer
RETIRED_FIELDS = ("recompute_every",)


def config_from_dict(fields, source="checkpoint"):
    try:
        fields = {k: v for k, v in fields.items() if k not in RETIRED_FIELDS}
        fields["patch_size"] = tuple(fields["patch_size"])
        return DiTConfig(**fields)
    except (TypeError, KeyError, ValueError) as err:
        raise CheckpointError(f"{source}: 'dit_config' in its metadata is not a valid DiTConfig ({err})") from err


def select_weights(tensors, prefer_ema=True, source="checkpoint"):
    """The model parameters of a checkpoint: the `ema/` namespace if present (and preferred; `model/` for what the
    EMA does not track), else `model/`, else the un-namespaced tensors."""
    spaces = ("ema", "model") if prefer_ema else ("model",)
    for space in spaces:
        prefix = f"{space}/"
        picked = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if picked:
            # the EMA tracks trained parameters only: frozen ones (a frozen reference tower) come from the model
            model = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
            return {**model, **picked}
    bare = {k: v for k, v in tensors.items() if "/" not in k}
    if not bare:
        raise CheckpointError(f"{source} holds no transformer weights (no 'ema/', 'model/' or bare names)")
    return bare


# the parameters conditioning adds to a text-to-video model
CONDITIONING = ("condition_embed.", "task_embed.", "reference_encoder.", "reference_projection.")


def conditioning_added(expected_names, given_names):
    """The parameters of a conditioned model (`expected_names`) that a checkpoint (`given_names`) lacks as a whole
    group (the condition input, the task embeddings, the reference tower and its projection): they keep their
    initialisation (zero input weights for the condition; the tower starts from its own checkpoint), so the
    checkpoint's model is where training starts (a text-to-video model, or a conditioned one gaining tasks). A group
    the checkpoint holds in part is not added: the missing names are refused."""
    given = [name for name in given_names if name.startswith(CONDITIONING)]
    absent = [group for group in CONDITIONING if not any(name.startswith(group) for name in given)]
    return {name for name in expected_names if name.startswith(tuple(absent))} if absent else set()


def load_dit_weights(model, weights, source="checkpoint", spatial_growth="extend"):
    """Load parameters into `model`, growing positional tables that are smaller than the model's (`spatial_growth`:
    see mg.models.dit.embeddings.SPATIAL_GROWTH); a text-to-video checkpoint loads into a conditioned model
    (`conditioning_added`). Any other name or shape that does not fit raises before anything is loaded."""
    params = {p.name: p for p in model.get_parameters()}
    sizes = {name: params[name].shape[0] for name in TABLES}
    if all(name in weights for name in TABLES) and any(weights[n].shape[0] < sizes[n] for n in TABLES):
        weights = expand_position_tables(weights, sizes[TABLES[0]], sizes[TABLES[1]], sizes[TABLES[2]],
                                         spatial_growth)
    added = conditioning_added(params, weights)
    check_names({n: p for n, p in params.items() if n not in added}, weights, f"{source} does not fit MovieGenDiT")
    return load_state_dict(model, weights, strict=False, source=source)


def load_dit(path, prefer_ema=True, **config_overrides):
    """Build a MovieGenDiT from a checkpoint (config from its metadata, fields overridable) and load its weights."""
    tensors, metadata = load_checkpoint(path)
    if "dit_config" not in metadata:
        raise CheckpointError(f"checkpoint {path} has no 'dit_config' in its metadata: not a transformer checkpoint")
    config = replace(config_from_dict(metadata["dit_config"], str(path)), **config_overrides)
    model = MovieGenDiT(config)
    load_dit_weights(model, select_weights(tensors, prefer_ema, str(path)), str(path))
    model.set_train(False)
    return model


def save_dit(model, path_stem, metadata=None, overwrite=False):
    """Export the model's parameters with its configuration (a checkpoint `load_dit` reads)."""
    meta = dict(metadata or {})
    meta["dit_config"] = config_to_dict(model.config)
    return save_checkpoint(path_stem, state_dict(model), meta, overwrite=overwrite)
