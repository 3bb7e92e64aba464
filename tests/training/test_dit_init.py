"""The transformer a run starts from (mg.training.dit_init): built without materialising it whole, its initial
values depend only on the seed and the parameter names, and the previous stage's weights (a file or a sharded
directory) load with the positional tables grown, as the eager load does."""
import numpy as np
import pytest

import mg.parallel.sharded_checkpoint as sc
from mg.io import CheckpointError, save_checkpoint, state_dict
from mg.models.dit import MovieGenDiT, dit_config, load_dit_weights
from mg.parallel.layers import shard_flat, shard_tp
from mg.parallel.parallelize import tensor_parallel_mode
from mg.training.dit_init import build_dit

SMALL = dict(depth=2, dim=32, ffn_dim=48, num_heads=4, in_channels=4, text_encoders={"ul2": 12})


def _config(max_h=4):
    return dit_config("tiny", **SMALL, max_t=2, max_h=max_h, max_w=max_h)


def test_the_initial_values_depend_on_the_seed_and_the_names_only():
    first, again, other = (state_dict(build_dit(_config(), seed)) for seed in (3, 3, 4))
    for name, value in first.items():
        np.testing.assert_array_equal(again[name], value, err_msg=name)
    random = [n for n in first if first[n].std() > 0]
    assert len(random) > 10 and all(not np.array_equal(first[n], other[n]) for n in random)
    # zero-initialised layers stay zero (DiT practice), ones stay ones
    assert not first["t_modulation.weight"].any() and (first["blocks.0.attn_norm.weight"] == 1).all()


def _previous_stage(seed=5):
    """A stage-1-sized model's weights, all random (so every table row and weight is checked)."""
    model = MovieGenDiT(_config(max_h=2))
    rng = np.random.default_rng(seed)
    return {p.name: rng.standard_normal(p.shape).astype(np.float32) for p in model.trainable_params()}


def _grown_eagerly(weights, growth):
    model = MovieGenDiT(_config())
    load_dit_weights(model, weights, "previous", growth)
    return state_dict(model)


def _save_sharded(final, weights, tp, dp):
    """The stage's checkpoint as the ranks of a tp x dp layout write it (EMA = the weights, model = something
    else: the EMA is what a next stage starts from)."""
    partial = sc.partial_dir(final)
    layouts = {}
    for name, value in weights.items():
        mode, parts = tensor_parallel_mode(name)
        for space in ("ema", "model"):
            layouts[f"{space}/{name}"] = sc.TensorLayout(value.shape, mode, parts)
    for t in range(tp):
        for d in range(dp):
            shard = {}
            for key, layout in layouts.items():
                value = weights[key.split("/", 1)[1]] * (1 if key.startswith("ema/") else -1)
                shard[key] = shard_flat(shard_tp(value, layout.tp_mode, layout.parts, t, tp), d, dp)
            sc.write_shard(partial, t, d, shard)
    return sc.commit(partial, final, sc.build_manifest(partial, tp, dp, layouts, {}, {}))


@pytest.mark.parametrize("growth", ["extend", "interpolate"])
def test_a_previous_stage_file_or_sharded_directory_loads_with_grown_tables(tmp_path, growth):
    weights = _previous_stage()
    want = _grown_eagerly(weights, growth)
    file = save_checkpoint(tmp_path / "stage1", {f"ema/{k}": v for k, v in weights.items()}, {})
    directory = _save_sharded(tmp_path / "step_000000010", weights, tp=2, dp=2)
    for source in (file, directory):
        got = state_dict(build_dit(_config(), 0, pretrained=source, spatial_growth=growth))
        assert sorted(got) == sorted(want)
        for name, value in want.items():
            np.testing.assert_array_equal(got[name], value, err_msg=f"{source.name}: {name}")


def test_a_previous_stage_of_another_model_is_refused_before_anything_is_built(tmp_path):
    weights = _previous_stage()
    weights["blocks.0.attn.qkv.weight"] = weights["blocks.0.attn.qkv.weight"][:, :16]
    del weights["blocks.1.ffn.w2.weight"]
    file = save_checkpoint(tmp_path / "other", weights, {})
    with pytest.raises(CheckpointError, match=r"other.safetensors does not fit this model: 1 missing "
                                              r"\[blocks.1.ffn.w2.weight\]; 1 shape mismatch \[blocks.0.attn.qkv"):
        build_dit(_config(), 0, pretrained=file)
