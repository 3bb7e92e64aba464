"""Checkpoint files, model state dicts, the checkpoint manager and RNG state."""
import json

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from mg.training.checkpoint import (CheckpointError, CheckpointManager, load_checkpoint, load_state_dict,
                                    merge_namespaces, read_metadata, rng_state, save_checkpoint, set_rng_state,
                                    split_namespaces, state_dict)


class TinyNet(nn.Cell):
    def __init__(self, width=4):
        super().__init__()
        self.proj = nn.Dense(3, width)
        self.norm = nn.LayerNorm((width,))

    def construct(self, x):
        return self.norm(self.proj(x))


def _mixed_tensors():
    rng = np.random.default_rng(1)
    return {
        "a": rng.standard_normal((3, 5)).astype(np.float32),
        "b": rng.standard_normal(7).astype(np.float16),
        "c": np.arange(6, dtype=np.int64).reshape(2, 3),
        "scalar": np.array(3.5, dtype=np.float64),
    }


def test_save_load_round_trip_is_identical(tmp_path):
    tensors = _mixed_tensors()
    meta = {"step": 12, "config": {"lr": 1e-4, "name": "x"}, "sampler": [1, 2, 3]}
    path = save_checkpoint(tmp_path / "ck", tensors, meta)
    assert path == tmp_path / "ck.safetensors"
    for spelling in (tmp_path / "ck", path, tmp_path / "ck.json"):
        loaded, loaded_meta = load_checkpoint(spelling)
        assert loaded_meta == meta
        assert sorted(loaded) == sorted(tensors)
        for name, array in tensors.items():
            assert loaded[name].dtype == array.dtype and loaded[name].shape == array.shape
            np.testing.assert_array_equal(loaded[name], array)
    sidecar = json.loads((tmp_path / "ck.json").read_text())
    assert sidecar["tensors"]["a"] == {"shape": [3, 5], "dtype": "float32"}


def test_model_state_dict_round_trip_through_file(tmp_path):
    src, dst = TinyNet(), TinyNet()
    dst.proj.weight.set_data(ms.Tensor(np.zeros((4, 3), np.float32)))
    expected = {p.name: p.asnumpy().copy() for p in src.get_parameters()}
    save_checkpoint(tmp_path / "m", state_dict(src), {})
    tensors, _ = load_checkpoint(tmp_path / "m")
    load_state_dict(dst, tensors)
    for p in dst.get_parameters():
        np.testing.assert_array_equal(p.asnumpy(), expected[p.name])


def test_bfloat16_parameters_are_stored_as_float32_and_cast_back():
    net = TinyNet()
    net.proj.weight = ms.Parameter(net.proj.weight.astype(ms.bfloat16), name="proj.weight")
    expected = net.proj.weight.astype(ms.float32).asnumpy()
    tensors = state_dict(net)
    assert tensors["proj.weight"].dtype == np.float32
    np.testing.assert_array_equal(tensors["proj.weight"], expected)
    tensors["proj.weight"] = tensors["proj.weight"] * 2
    load_state_dict(net, tensors)
    assert net.proj.weight.dtype == ms.bfloat16
    np.testing.assert_array_equal(net.proj.weight.astype(ms.float32).asnumpy(), expected * 2)  # x2 exact in bf16


def test_strict_load_lists_every_problem_and_loads_nothing():
    net = TinyNet()
    before = net.norm.gamma.asnumpy().copy()
    tensors = state_dict(TinyNet(width=4))
    tensors["norm.gamma"] = np.full(4, 7.0, np.float32)
    del tensors["proj.bias"]
    tensors["extra.w"] = np.zeros(2, np.float32)
    tensors["proj.weight"] = np.zeros((5, 3), np.float32)
    with pytest.raises(CheckpointError) as err:
        load_state_dict(net, tensors)
    message = str(err.value)
    for piece in ("proj.bias", "extra.w", "proj.weight: checkpoint (5, 3) vs model (4, 3)"):
        assert piece in message
    np.testing.assert_array_equal(net.norm.gamma.asnumpy(), before)

    result = load_state_dict(net, tensors, strict=False)
    assert result.missing == ["proj.bias"] and result.unexpected == ["extra.w"]
    assert len(result.mismatched) == 1 and result.mismatched[0].startswith("proj.weight")
    np.testing.assert_array_equal(net.norm.gamma.asnumpy(), np.full(4, 7.0, np.float32))


def test_refuses_to_overwrite_unless_asked(tmp_path):
    save_checkpoint(tmp_path / "ck", {"w": np.zeros(2, np.float32)}, {"v": 1})
    with pytest.raises(FileExistsError, match="ck.safetensors"):
        save_checkpoint(tmp_path / "ck", {"w": np.ones(2, np.float32)}, {"v": 2})
    save_checkpoint(tmp_path / "ck", {"w": np.ones(2, np.float32)}, {"v": 2}, overwrite=True)
    tensors, meta = load_checkpoint(tmp_path / "ck")
    np.testing.assert_array_equal(tensors["w"], np.ones(2, np.float32))
    assert meta == {"v": 2}


def test_bad_metadata_fails_before_writing(tmp_path):
    with pytest.raises(TypeError, match="JSON"):
        save_checkpoint(tmp_path / "ck", {"w": np.zeros(2, np.float32)}, {"obj": object()})
    assert list(tmp_path.iterdir()) == []


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="nothere.safetensors is missing"):
        load_checkpoint(tmp_path / "nothere")

    save_checkpoint(tmp_path / "inc", {"w": np.zeros(4, np.float32)}, {})
    (tmp_path / "inc.json").unlink()
    with pytest.raises(CheckpointError, match="inc.safetensors is incomplete"):
        load_checkpoint(tmp_path / "inc")

    save_checkpoint(tmp_path / "cut", {"w": np.zeros(64, np.float32)}, {})
    data = (tmp_path / "cut.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-10])
    with pytest.raises(CheckpointError, match="cut.safetensors has"):
        load_checkpoint(tmp_path / "cut")

    save_checkpoint(tmp_path / "bad", {"w": np.zeros(64, np.float32)}, {})
    size = (tmp_path / "bad.safetensors").stat().st_size
    (tmp_path / "bad.safetensors").write_bytes(b"\xff" * size)
    with pytest.raises(CheckpointError, match="bad.safetensors is corrupt"):
        load_checkpoint(tmp_path / "bad")

    (tmp_path / "junk.json").write_text("{not json")
    (tmp_path / "junk.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="junk.json is unreadable"):
        load_checkpoint(tmp_path / "junk")


def test_namespaces_round_trip():
    parts = {"model": {"a.w": np.zeros(2)}, "ema": {"a.w": np.ones(2)}}
    merged = merge_namespaces(parts)
    assert sorted(merged) == ["ema/a.w", "model/a.w"]
    back = split_namespaces(merged)
    np.testing.assert_array_equal(back["ema"]["a.w"], np.ones(2))
    with pytest.raises(CheckpointError, match="nospace"):
        split_namespaces({"nospace": np.zeros(1)})


def test_manager_keeps_last_k_and_resolves(tmp_path):
    mgr = CheckpointManager(tmp_path / "ckpt", keep_last=2)
    assert mgr.latest() is None
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        mgr.resolve("latest")
    user_file = tmp_path / "ckpt" / "notes.json"
    user_file.write_text("{}")
    for step in (10, 20, 30):
        mgr.save(step, {"w": np.full(3, step, np.float32)}, {"epoch": step // 10})
    assert [p.name for p in mgr.list()] == ["step_000000020.safetensors", "step_000000030.safetensors"]
    assert not (tmp_path / "ckpt" / "step_000000010.json").exists()
    assert user_file.exists()
    assert mgr.resolve("latest") == mgr.path_for(30)
    assert mgr.resolve(tmp_path / "ckpt") == mgr.path_for(30)
    assert mgr.resolve(str(mgr.path_for(20).with_suffix(""))) == mgr.path_for(20)
    assert mgr.resolve(mgr.path_for(20).with_suffix(".json")) == mgr.path_for(20)
    assert read_metadata(mgr.path_for(20)) == {"epoch": 2, "step": 20}
    with pytest.raises(CheckpointError, match="step_000000010.safetensors is not found"):
        mgr.resolve(tmp_path / "ckpt" / "step_000000010")
    with pytest.raises(CheckpointError, match="no complete 'step_\\*' checkpoint"):
        mgr.resolve(tmp_path)
    with pytest.raises(ValueError, match="keep_last"):
        CheckpointManager(tmp_path / "x", keep_last=0)


def test_manager_ignores_and_cleans_incomplete_saves(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=None)
    mgr.save(1, {"w": np.zeros(2, np.float32)})
    orphan = tmp_path / "step_000000002.safetensors"  # tensors renamed, sidecar never written
    orphan.write_bytes(b"partial")
    stale = tmp_path / ".step_000000003.safetensors.tmp-999"
    stale.write_bytes(b"partial")
    assert mgr.list() == [mgr.path_for(1)]
    with pytest.raises(CheckpointError, match="incomplete"):
        mgr.resolve(orphan)
    CheckpointManager(tmp_path)
    assert not orphan.exists() and not stale.exists()
    assert mgr.list() == [mgr.path_for(1)]


def test_rng_state_round_trip_through_json():
    gen = np.random.default_rng(5)
    np.random.seed(3)
    gen.standard_normal(3)
    state = json.loads(json.dumps(rng_state({"noise": gen})))
    expected = (gen.standard_normal(4), np.random.rand(2), __import__("random").random())
    gen2 = np.random.default_rng(0)
    np.random.seed(99)
    set_rng_state(state, {"noise": gen2})
    np.testing.assert_array_equal(gen2.standard_normal(4), expected[0])
    np.testing.assert_array_equal(np.random.rand(2), expected[1])
    assert __import__("random").random() == expected[2]
    with pytest.raises(CheckpointError, match="'other'"):
        set_rng_state(state, {"other": gen2})


def test_state_dict_is_a_snapshot_not_a_view():
    net = TinyNet()
    tensors = state_dict(net)
    before = tensors["proj.weight"].copy()
    tensors["proj.weight"][0, 0] = 123.0  # writing into the snapshot must not touch the model...
    assert net.proj.weight.asnumpy()[0, 0] == before[0, 0]
    net.proj.weight.set_data(ms.Tensor(np.zeros((4, 3), np.float32)))  # ...nor the model the snapshot
    assert tensors["proj.weight"][0, 1] == before[0, 1]


@ms.jit
def _jitted_forward(net, x):
    return net(x)


def test_load_state_dict_reaches_an_already_compiled_graph():
    net = TinyNet()
    x = ms.Tensor(np.ones((2, 3), np.float32))
    _jitted_forward(net, x)  # compile first, as a trainer resuming mid-run would have
    other = TinyNet()
    other.proj.weight.set_data(ms.Tensor(np.full((4, 3), 0.5, np.float32)))
    other.norm.gamma.set_data(ms.Tensor(np.arange(4, dtype=np.float32)))
    load_state_dict(net, state_dict(other))
    np.testing.assert_allclose(_jitted_forward(net, x).asnumpy(), other(x).asnumpy(), rtol=1e-6)
