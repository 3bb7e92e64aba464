"""Model averaging (mg/training/averaging.py, tools/average_checkpoints.py): the average of training files,
exported model files and sharded directories equals NumPy's average of the weights the files hold (EMA preferred),
sharded inputs are read a parameter at a time, the result loads for inference and as a previous stage, and every
refusal names the option or the file and comes before any averaging."""
import json
import logging
import runpy
import sys
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import mg.parallel.sharded_checkpoint as sc
from mg.io import CheckpointError, load_state_dict, save_checkpoint, state_dict
from mg.models.dit import MovieGenDiT, dit_config, save_dit
from mg.models.dit.io import config_to_dict
from mg.parallel.layers import shard_flat, shard_tp
from mg.parallel.parallelize import tensor_parallel_mode
from mg.pipelines.text_to_video import load_dit_checkpoint
from mg.training import averaging
from mg.training.averaging import average_checkpoints
from mg.training.checkpoint import merge_namespaces
from mg.training.dit_init import build_dit

ROOT = Path(__file__).resolve().parents[2]
CONFIG = dit_config("tiny", depth=1, dim=32, ffn_dim=48, num_heads=4, in_channels=4, text_encoders={"ul2": 8},
                    max_t=2, max_h=4, max_w=4)
METADATA = {"step": 7, "dit_config": config_to_dict(CONFIG)}


@cache
def shapes():
    """{parameter name: shape} of the tiny transformer (built without its weights)."""
    from mindspore.nn.utils import no_init_parameters

    with no_init_parameters():
        return {p.name: tuple(p.shape) for p in MovieGenDiT(CONFIG).get_parameters()}


def random_weights(seed, of=None):
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in (of or shapes()).items()}


def training_file(stem, seed, ema=True, metadata=METADATA):
    """A one-process training checkpoint: model/, optimizer/ and (with `ema`) ema/ weights unlike the model's."""
    model = random_weights(seed)
    parts = {"model": model, "optimizer": {f"adam_m.{n}": np.zeros_like(v) for n, v in model.items()}}
    if ema:
        parts["ema"] = random_weights(seed + 1000)
    return save_checkpoint(stem, merge_namespaces(parts), metadata)


def exported_file(stem, seed):
    """A model file as save_dit (and so tools/export_dit.py) writes it: bare names and the DiT config."""
    model = MovieGenDiT(CONFIG)
    load_state_dict(model, random_weights(seed))
    return save_dit(model, stem)


def sharded_dir(final, seed, tp, dp):
    """A parallel run's checkpoint as the ranks of a tp x dp layout write it (model/ and ema/; the same rule as
    tests/training/test_dit_init.py); returns (the directory, its EMA weights)."""
    spaces = {"model": random_weights(seed), "ema": random_weights(seed + 1000)}
    arrays = merge_namespaces(spaces)
    layouts = {key: sc.TensorLayout(value.shape, *tensor_parallel_mode(key.split("/", 1)[1]))
               for key, value in arrays.items()}
    partial = sc.partial_dir(final)
    for t in range(tp):
        for d in range(dp):
            sc.write_shard(partial, t, d, {key: shard_flat(shard_tp(arrays[key], layout.tp_mode, layout.parts, t, tp),
                                                           d, dp) for key, layout in layouts.items()})
    return sc.commit(partial, final, sc.build_manifest(partial, tp, dp, layouts, METADATA, {})), spaces["ema"]


def file_model(path):
    """The model weights of a checkpoint file read here with safetensors alone: ema/, else model/, else bare."""
    tensors = load_file(str(path))
    for prefix in ("ema/", "model/", ""):
        picked = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix) and "/" not in k[len(prefix):]}
        if picked:
            return picked
    raise AssertionError(f"{path} holds no model")


def numpy_average(models, weights):
    total = sum(weights)
    return {name: (sum(w * m[name].astype(np.float64) for w, m in zip(weights, models)) / total).astype(np.float32)
            for name in models[0]}


def assert_written(path, expected):
    got = load_file(str(path))
    assert sorted(got) == sorted(expected) == sorted(shapes())
    for name, value in expected.items():
        assert got[name].dtype == np.float32, name
        np.testing.assert_allclose(got[name], value, rtol=1e-6, atol=1e-7, err_msg=name)


def sidecar(path):
    return json.loads(Path(path).with_suffix(".json").read_text())["metadata"]


# ----------------------------------------------------------------------------------------------------------------------
# Averages
# ----------------------------------------------------------------------------------------------------------------------
def test_the_uniform_average_of_training_files_takes_their_ema_weights(tmp_path):
    inputs = [training_file(tmp_path / "a", 1), training_file(tmp_path / "b", 2),
              training_file(tmp_path / "c", 3, ema=False)]
    result = average_checkpoints(inputs, tmp_path / "avg")
    expected = numpy_average([file_model(p) for p in inputs], [1, 1, 1])
    assert_written(result.path, expected)
    raw = numpy_average([file_model(p) for p in inputs[2:]] + [random_weights(s) for s in (1, 2)], [1, 1, 1])
    assert not np.allclose(raw["blocks.0.attn.qkv.weight"], expected["blocks.0.attn.qkv.weight"])  # EMA was taken
    assert result.num_params == len(shapes()) and result.sources == inputs
    assert sidecar(result.path) == {"dit_config": METADATA["dit_config"], "sources": [str(p) for p in inputs],
                                    "average_weights": [1 / 3] * 3}


def test_a_weighted_average_of_mixed_inputs_reads_sharded_ones_a_parameter_at_a_time(tmp_path, monkeypatch):
    first, first_ema = sharded_dir(tmp_path / "run1" / "step_000000010", 4, tp=2, dp=2)
    second, second_ema = sharded_dir(tmp_path / "run2" / "step_000000020", 5, tp=1, dp=3)
    inputs = [exported_file(tmp_path / "exported", 6), first, training_file(tmp_path / "trained", 7), second]
    reads = []
    read_full = sc.ShardedCheckpoint.read_full
    monkeypatch.setattr(sc.ShardedCheckpoint, "read_full", lambda self, key: reads.append((self.path, key))
                        or read_full(self, key))

    result = average_checkpoints(inputs, tmp_path / "avg", weights=[1, 2, 5, 0.5])

    models = [file_model(inputs[0]), first_ema, file_model(inputs[2]), second_ema]
    assert_written(result.path, numpy_average(models, [1, 2, 5, 0.5]))
    assert sidecar(result.path)["average_weights"] == pytest.approx([1 / 8.5, 2 / 8.5, 5 / 8.5, 0.5 / 8.5])
    # one parameter from each sharded input in turn, each EMA parameter read once: never a whole input model
    assert [path for path, _ in reads] == [first, second] * len(shapes())
    assert [key for _, key in reads[::2]] == [key for _, key in reads[1::2]]
    assert sorted(key for _, key in reads[::2]) == sorted(f"ema/{name}" for name in shapes())


def test_the_average_loads_for_inference_and_as_a_previous_stage(tmp_path):
    inputs = [training_file(tmp_path / "a", 8, metadata={}), exported_file(tmp_path / "b", 9)]
    written = average_checkpoints(inputs, tmp_path / "avg", weights=[3, 1]).path
    assert sidecar(written)["dit_config"] == METADATA["dit_config"]  # one input recording the config is enough
    expected = numpy_average([file_model(p) for p in inputs], [3, 1])
    for model in (load_dit_checkpoint(str(written)), build_dit(CONFIG, seed=0, pretrained=written)):
        loaded = state_dict(model)
        for name, value in expected.items():
            np.testing.assert_allclose(loaded[name], value, rtol=1e-6, atol=1e-7, err_msg=name)


def test_one_parameter_is_averaged_in_float64_and_kept_in_its_stored_dtype():
    rng = np.random.default_rng(18)
    values = [rng.standard_normal(4096).astype(np.float32) for _ in range(3)]
    weights = averaging.normalized_weights(None, 3)
    exact = sum(v.astype(np.float64) for v in values) / 3

    def ulps_off(result):
        return (np.abs(result - exact) / np.spacing(np.abs(result))).max()

    assert ulps_off(averaging.average_parameter(values, weights)) <= 0.5 + 1e-6  # rounded once, at the end
    assert ulps_off(sum(np.float32(w) * v for w, v in zip(weights, values))) > 0.5  # a float32 sum is not
    assert averaging.average_parameter([v.astype(np.float16) for v in values], weights).dtype == np.float16
    assert averaging.average_parameter([values[0].astype(np.float16), values[1]], [0.5, 0.5]).dtype == np.float32


# ----------------------------------------------------------------------------------------------------------------------
# Refusals: before any reading (options, output) or before any averaging (inputs)
# ----------------------------------------------------------------------------------------------------------------------
@pytest.fixture
def no_averaging(monkeypatch):
    def started(*_):
        raise AssertionError("averaging started before the inputs were checked")
    monkeypatch.setattr(averaging, "average_parameter", started)


@pytest.fixture
def nothing_read(monkeypatch, no_averaging):
    def started(*_):
        raise AssertionError("an input was read before the options were checked")
    monkeypatch.setattr(averaging, "open_source", started)


@pytest.fixture
def pair(tmp_path):
    return [training_file(tmp_path / "a", 10), training_file(tmp_path / "b", 11)]


@pytest.mark.parametrize("inputs, weights, error, message", [
    (1, None, ValueError, r"--checkpoints needs two or more checkpoints to average, got 1"),
    (2, [1.0], ValueError, r"--weights gives 1 weights for 2 --checkpoints"),
    (2, [1.0, 2.0, 3.0], ValueError, r"--weights gives 3 weights for 2 --checkpoints"),
    (2, [1.0, 0.0], ValueError, r"--weights must all be positive and finite, got \[1.0, 0.0\]"),
    (2, [-1.0, 2.0], ValueError, r"--weights must all be positive and finite"),
    (2, [1.0, float("nan")], ValueError, r"--weights must all be positive and finite"),
])
def test_bad_options_are_refused_before_reading(tmp_path, pair, nothing_read, inputs, weights, error, message):
    with pytest.raises(error, match=message):
        average_checkpoints(pair[:inputs], tmp_path / "avg", weights)
    assert not list(tmp_path.glob("avg*"))


def test_an_existing_output_is_refused_before_reading(tmp_path, pair, nothing_read):
    save_checkpoint(tmp_path / "avg", {"x": np.zeros(1, np.float32)}, {})
    before = (tmp_path / "avg.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match=r"--output .*avg: .*avg.safetensors already exists .*--overwrite true"):
        average_checkpoints(pair, tmp_path / "avg")
    assert (tmp_path / "avg.safetensors").read_bytes() == before


def test_overwrite_replaces_the_output_and_a_failed_write_leaves_nothing(tmp_path, pair, monkeypatch):
    first = average_checkpoints(pair, tmp_path / "avg").path
    average_checkpoints(pair, tmp_path / "avg", weights=[1, 4], overwrite=True)
    assert_written(first, numpy_average([file_model(p) for p in pair], [1, 4]))

    def crash(tensors, path, metadata=None):
        Path(path).write_bytes(b"half a file")
        raise OSError("disk full")
    monkeypatch.setattr("mg.io.save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        average_checkpoints(pair, tmp_path / "out" / "avg")
    assert list((tmp_path / "out").iterdir()) == []  # no tensors file, no sidecar, no temporary


def _corrupt_tensors(path):
    data = bytearray(path.read_bytes())
    data[-4:] = bytes(4 - i for i in range(4))
    path.write_bytes(bytes(data))
    return r"b.safetensors is corrupt"


def _garbled_sidecar(path):
    path.with_suffix(".json").write_text("{not json")
    return r"b.json is unreadable"


@pytest.mark.parametrize("damage", [_corrupt_tensors, _garbled_sidecar])
def test_an_unreadable_input_is_refused_naming_it(tmp_path, pair, no_averaging, damage):
    message = damage(pair[1])
    with pytest.raises(CheckpointError, match=message):
        average_checkpoints(pair, tmp_path / "avg")
    assert not list(tmp_path.glob("avg*"))


def test_a_missing_input_is_refused_naming_the_option_and_the_path(tmp_path, pair, no_averaging):
    with pytest.raises(CheckpointError, match=r"--checkpoints .*nowhere: checkpoint .*nowhere.safetensors is not "
                                              r"found"):
        average_checkpoints([pair[0], tmp_path / "nowhere"], tmp_path / "avg")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"--checkpoints .*empty: no complete 'step_\*' checkpoint"):
        average_checkpoints([tmp_path / "empty", pair[0]], tmp_path / "avg")


def _other_shape(weights, metadata):
    weights["blocks.0.ffn.w2.weight"] = weights["blocks.0.ffn.w2.weight"][:, :24]
    return weights, metadata, r"c.safetensors does not have the parameters of .*a.safetensors: 1 shape mismatch " \
                              r"\[blocks.0.ffn.w2.weight: \(32, 24\) vs expected \(32, 48\)\]"


def _one_missing(weights, metadata):
    del weights["final.proj.bias"]
    return weights, metadata, r"c.safetensors does not have the parameters of .*a.safetensors: 1 missing " \
                              r"\[final.proj.bias\]"


def _other_config(weights, metadata):
    config = {**metadata["dit_config"], "norm_eps": 1e-5}
    return weights, {"dit_config": config}, r"a.safetensors and .*c.safetensors have different transformer " \
                                            r"configs: dit_config.norm_eps is 1e-06 vs 1e-05"


def _config_of_another_model(weights, metadata):
    config = {**metadata["dit_config"], "max_t": 3}
    return weights, {"dit_config": config}, r"dit_config.max_t is 2 vs 3"


@pytest.mark.parametrize("change", [_other_shape, _one_missing, _other_config, _config_of_another_model])
def test_another_architecture_is_refused_naming_both_files_and_the_first_difference(tmp_path, pair, no_averaging,
                                                                                       change):
    weights, metadata, message = change(random_weights(12), dict(METADATA))
    odd = save_checkpoint(tmp_path / "c", weights, metadata)
    with pytest.raises(CheckpointError, match=message):
        average_checkpoints([pair[0], pair[1], odd], tmp_path / "avg")
    assert not list(tmp_path.glob("avg*"))


def test_inputs_must_fit_their_config_and_one_must_record_it(tmp_path, no_averaging):
    config = {**METADATA["dit_config"], "depth": 2}
    unfit = [training_file(tmp_path / n, 13, metadata={"dit_config": config}) for n in ("a", "b")]
    with pytest.raises(CheckpointError, match=r"a.safetensors does not fit the transformer of its dit_config: "
                                              r"\d+ missing \[blocks.1."):
        average_checkpoints(unfit, tmp_path / "avg")
    bare = [training_file(tmp_path / n, 14, metadata={}) for n in ("c", "d")]
    with pytest.raises(CheckpointError, match=r"--checkpoints: none of .*c.safetensors.*d.safetensors.* has a "
                                              r"'dit_config'"):
        average_checkpoints(bare, tmp_path / "avg")


# ----------------------------------------------------------------------------------------------------------------------
# The tool
# ----------------------------------------------------------------------------------------------------------------------
def test_the_tool_end_to_end(tmp_path, monkeypatch, capsys):
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))  # the tool's basicConfig(force=True) replaces them
    monkeypatch.setattr(root, "level", root.level)
    single = training_file(tmp_path / "a", 16)
    directory, ema = sharded_dir(tmp_path / "run" / "step_000000030", 17, tp=2, dp=1)
    tool = ROOT / "tools" / "average_checkpoints.py"
    argv = [str(tool), "--checkpoints", f"[{single}, {directory}]", "--output", str(tmp_path / "avg"),
            "--weights", "[1, 3]", "--overwrite", "false"]
    monkeypatch.setattr(sys, "argv", argv)

    runpy.run_path(str(tool), run_name="__main__")

    out, err = capsys.readouterr()
    assert out.strip() == (f"averaged {len(shapes())} parameters of 2 checkpoints: {single} x 0.25, "
                           f"{directory} x 0.75")
    assert f"average_checkpoints: wrote {tmp_path / 'avg.safetensors'}" in err
    assert_written(tmp_path / "avg.safetensors", numpy_average([file_model(single), ema], [1, 3]))
    with pytest.raises(FileExistsError, match="--overwrite true"):
        runpy.run_path(str(tool), run_name="__main__")
