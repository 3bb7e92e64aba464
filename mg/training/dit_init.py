"""The transformer a training run starts from, built so that no rank ever holds it whole.

The model is built without its weights (`no_init_parameters`); its initial values are fixed as functions of the
seed and each parameter's name, or as the previous stage's weights (`--model.pretrained_model_path`, positional
tables grown); `parallelize` gives each sliced parameter its piece; then every rank computes only its pieces, one
parameter at a time (mg.parallel.deferred). In one process this gives the same model as the gathered pieces of any
layout.
"""
from __future__ import annotations

from mindspore.common.initializer import initializer
from mindspore.nn.utils import no_init_parameters

from mg.io import check_names, load_checkpoint
from mg.models.clip_vision import clip_vision_weights
from mg.models.dit import MovieGenDiT
from mg.models.dit.embeddings import expand_position_tables
from mg.models.dit.io import TABLES, conditioning_added, select_weights
from mg.parallel import parallelize
from mg.parallel.deferred import PieceOf, materialize, seed_initializers
from mg.parallel.sharded_checkpoint import ShardedCheckpoint, is_sharded_checkpoint


def previous_stage_weights(path):
    """(names -> full shapes, read(name) -> array) of a checkpoint's model weights (EMA preferred): a sharded
    directory is read a parameter at a time; a single file is read whole (the form of one-process runs)."""
    if is_sharded_checkpoint(path):
        checkpoint = ShardedCheckpoint(path)
        keys = checkpoint.keys()
        space = "ema/" if any(k.startswith("ema/") for k in keys) else "model/"
        shapes = {k[len(space):]: tuple(checkpoint.layout(k).full_shape) for k in keys if k.startswith(space)}
        return shapes, lambda name: checkpoint.read_full(space + name)
    tensors, _ = load_checkpoint(path)
    weights = select_weights(tensors, source=str(path))
    return {name: array.shape for name, array in weights.items()}, weights.__getitem__


def start_from(model, path, spatial_growth="extend"):
    """Make the deferred parameters of `model` start from the weights of the checkpoint at `path`, its positional
    tables grown to the model's (mg.models.dit.embeddings.expand_position_tables). Returns the names of the
    conditioning parameters the checkpoint lacks (`conditioning_added`), left at their initialisation."""
    shapes, read = previous_stage_weights(path)
    params = {p.name: p for p in model.trainable_params()}
    missing_tables = [name for name in TABLES if name not in shapes]
    if missing_tables:
        raise ValueError(f"{path}: positional tables {missing_tables} are missing")
    tables = expand_position_tables({name: read(name) for name in TABLES}, *(params[n].shape[0] for n in TABLES),
                                    spatial=spatial_growth)
    added = conditioning_added(params, shapes)  # kept at their initialisation
    params = {name: param for name, param in params.items() if name not in added}
    check_names(params, {**shapes, **{n: t.shape for n, t in tables.items()}}, f"{path} does not fit this model")
    for name, param in params.items():
        _start_param(param, tables[name] if name in tables else _Read(read, name))
    return added


REFERENCE_TOWER = "reference_encoder."


def start_reference_encoder(model, path):
    """Make the deferred parameters of the model's reference (vision) tower start from a Hugging Face-format CLIP
    vision checkpoint directory, as the paper's starts from MetaCLIP's."""
    shapes, read = clip_vision_weights(path)
    params = {p.name[len(REFERENCE_TOWER):]: p for p in model.trainable_params() if p.name.startswith(REFERENCE_TOWER)}
    check_names(params, shapes, f"{path} does not fit the model's reference_encoder (model.reference_encoder)")
    for name, param in params.items():
        _start_param(param, _Read(read, name))


def _start_param(param, whole):
    param.set_data(initializer(PieceOf(whole, param.shape, lambda full: full), param.shape, param.dtype))


class _Read:
    """Reads one parameter when called (the whole-value source of a deferred parameter)."""

    def __init__(self, read, name):
        self.read, self.name = read, name

    def __call__(self, arr):
        arr[...] = self.read(self.name)


def build_dit(config, seed, groups=None, sp=False, zero_stage=0, pretrained=None, spatial_growth="extend",
              reference_encoder=None):
    """The model of a training run: this rank's part of `config` under `groups` (None: one process), initialised
    from `seed` or from the `pretrained` checkpoint (a file or a sharded directory); a reference tower that the
    checkpoint lacks starts from the CLIP vision checkpoint `reference_encoder` (a directory) when one is given."""
    with no_init_parameters():
        model = MovieGenDiT(config)
    seed_initializers(model, seed)
    added = {p.name for p in model.trainable_params()}
    if pretrained is not None:
        added = start_from(model, pretrained, spatial_growth)
    if reference_encoder is not None and any(name.startswith(REFERENCE_TOWER) for name in added):
        start_reference_encoder(model, reference_encoder)
    if groups is not None:
        parallelize(model, groups, sp=sp, zero_stage=zero_stage)
    materialize(model)
    return model

