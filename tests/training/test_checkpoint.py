"""The checkpoint manager, namespaces and RNG state (the checkpoint files themselves: tests/test_io.py)."""
import json

import numpy as np
import pytest

from mg.io import CheckpointError, read_metadata
from mg.training.checkpoint import CheckpointManager, merge_namespaces, rng_state, set_rng_state, split_namespaces


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
    assert mgr.list() == [mgr.path_for(1)]
    with pytest.raises(CheckpointError, match="incomplete"):
        mgr.resolve(orphan)
    CheckpointManager(tmp_path)  # (temporaries of killed saves: tests/training/test_checkpoint_sigkill.py)
    assert not orphan.exists()
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
