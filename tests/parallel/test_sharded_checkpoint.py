"""Sharded checkpoints (mg/parallel/sharded_checkpoint.py): written by simulated ranks of one layout, read back
under others; corruption and missing files; the checkpoint manager's handling of directories; consolidation into a
model file that inference loads."""
import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

import mg.parallel.sharded_checkpoint as sc
from mg.io import CheckpointError, state_dict
from mg.models.dit import DiTConfig, MovieGenDiT, load_dit
from mg.models.dit.io import config_to_dict
from mg.parallel import Piece, ShardedCheckpoint, TensorLayout, consolidate
from mg.parallel.layers import shard_flat, shard_tp
from mg.parallel.parallelize import shard_plan
from mg.training.checkpoint import CheckpointManager, export_dit, find_checkpoint

ROOT = Path(__file__).resolve().parents[2]
LAYOUTS = {
    "model/col1": TensorLayout((8, 3), "column"),
    "model/col2": TensorLayout((16, 5), "column", parts=2),
    "model/col3": TensorLayout((24, 3), "column", parts=3),
    "model/col3.bias": TensorLayout((24,), "column", parts=3),
    "model/row": TensorLayout((5, 8), "row"),
    "model/row.bias": TensorLayout((7,), "row"),  # a row layer's bias is not split by TP
    "model/replicated": TensorLayout((3, 7)),
    "model/one": TensorLayout((1,)),  # dp rank 1 of 2 holds only padding
    "optimizer/global_step": TensorLayout((), split=False),
}


def full_arrays(seed=0):
    rng = np.random.default_rng(seed)
    arrays = {key: rng.standard_normal(layout.full_shape).astype(np.float32)
              for key, layout in LAYOUTS.items() if layout.split}
    arrays["optimizer/global_step"] = np.asarray(7, np.int32)
    return arrays


def stored_piece(full, layout, t, tp, d, dp):
    return shard_flat(shard_tp(full, layout.tp_mode, layout.parts, t, tp), d, dp)


def save_sharded(final, arrays, layouts, tp, dp, metadata=None):
    """What the ranks of a tp x dp layout and then one committing process do."""
    partial = sc.partial_dir(final)
    for t in range(tp):
        for d in range(dp):
            shard = {key: stored_piece(arrays[key], layout, t, tp, d, dp)
                     for key, layout in layouts.items() if layout.split}
            if (t, d) == (0, 0):
                shard.update({key: arrays[key] for key, layout in layouts.items() if not layout.split})
            sc.write_shard(partial, t, d, shard)
    manifest = sc.build_manifest(partial, tp, dp, layouts, metadata, {"dp": dp, "tp": tp, "zero_stage": 2})
    return sc.commit(partial, final, manifest)


@pytest.fixture
def saved(tmp_path):
    arrays = full_arrays()
    return save_sharded(tmp_path / "ckpt" / "step_000000005", arrays, LAYOUTS, 2, 2, {"step": 5}), arrays


@pytest.fixture
def opened(monkeypatch):
    """The names of the shard files `safe_open` opens."""
    names = []
    real = sc.safe_open

    def counting(path, **kwargs):
        names.append(Path(path).name)
        return real(path, **kwargs)

    monkeypatch.setattr(sc, "safe_open", counting)
    return names


def test_layout_on_disk(saved):
    final, _ = saved
    names = sorted(p.name for p in final.iterdir())
    assert names == sorted([sc.MANIFEST] + [f"shard-tp{t:03d}-dp{d:05d}.{ext}" for t in range(2) for d in range(2)
                                            for ext in ("safetensors", "json")])
    manifest = json.loads((final / sc.MANIFEST).read_text())
    assert (manifest["format"], manifest["version"], manifest["tp"], manifest["dp"]) == (sc.FORMAT_NAME, 1, 2, 2)
    assert manifest["tensors"]["model/col2"] == {"full_shape": [16, 5], "tp_mode": "column", "parts": 2,
                                                 "split": True}
    assert manifest["metadata"] == {"step": 5} and manifest["layout"]["zero_stage"] == 2
    assert not (final.parent / ".step_000000005.partial").exists()
    checkpoint = ShardedCheckpoint(final)
    assert set(checkpoint.keys()) == set(LAYOUTS) and checkpoint.metadata == {"step": 5}


def test_same_layout_reads_one_stored_tensor(saved, opened):
    final, arrays = saved
    checkpoint = ShardedCheckpoint(final)
    for key, layout in LAYOUTS.items():
        for t in range(2):
            for d in range(2):
                opened.clear()
                got = checkpoint.read(key, Piece(t, 2, d, 2, flat=True))
                if layout.split:
                    np.testing.assert_array_equal(got, stored_piece(arrays[key], layout, t, 2, d, 2))
                else:
                    np.testing.assert_array_equal(got, arrays[key])
                    assert got.shape == () and got.dtype == np.int32
                assert opened == [sc.shard_name(t, d) if layout.split else sc.shard_name(0, 0)]


@pytest.mark.parametrize("tp, dp, flat", [(4, 1, False), (4, 3, True), (1, 4, True), (1, 1, False), (2, 1, False),
                                          (2, 1, True)])
def test_other_layouts_read_exact_pieces(saved, tp, dp, flat):
    final, arrays = saved
    checkpoint = ShardedCheckpoint(final)
    for key, layout in LAYOUTS.items():
        if not layout.split:
            continue
        for t in range(tp):
            for d in range(dp if flat else 1):
                want = shard_tp(arrays[key], layout.tp_mode, layout.parts, t, tp)
                want = shard_flat(want, d, dp) if flat else want
                got = checkpoint.read(key, Piece(t, tp, d, dp, flat))
                assert got.dtype == want.dtype and got.shape == want.shape, (key, t, d)
                np.testing.assert_array_equal(got, want, err_msg=f"{key} t={t} d={d}")
    for key in LAYOUTS:
        np.testing.assert_array_equal(checkpoint.read_full(key), arrays[key])


def test_a_piece_the_layout_cannot_cut_is_refused(saved):
    checkpoint = ShardedCheckpoint(saved[0])
    with pytest.raises(ValueError, match="'model/col3' .* 24 rows in 3 parts cannot be split over tp=3"):
        checkpoint.read("model/col3", Piece(0, 3))
    with pytest.raises(ValueError, match="piece index 2 is not within a group of size 2"):
        Piece(2, 2)
    with pytest.raises(CheckpointError, match="holds no tensor 'model/absent'"):
        checkpoint.read_full("model/absent")


def test_resharding_opens_only_overlapping_shards(saved, opened):
    checkpoint = ShardedCheckpoint(saved[0])
    checkpoint.read("model/col2", Piece(1, 2))  # TP rank 1's rows live in shards (1, 0) and (1, 1) only
    assert sorted(opened) == [sc.shard_name(1, 0), sc.shard_name(1, 1)]
    opened.clear()
    checkpoint.read("model/col1", Piece(3, 4))  # the last quarter of the rows: the second half of TP piece 1
    assert opened == [sc.shard_name(1, 1)]


def test_chunked_resharding_equals_whole(saved, monkeypatch):
    final, arrays = saved
    monkeypatch.setattr(sc, "_CHUNK", 5)  # many chunks, some spanning two stored tensors
    checkpoint = ShardedCheckpoint(final)
    for key in ("model/col3", "model/row", "model/replicated"):
        np.testing.assert_array_equal(checkpoint.read_full(key), arrays[key])


def tensor_offset(path, key):
    """Byte offset of tensor `key`'s data in a safetensors file (8-byte header length, JSON header, data)."""
    raw = path.read_bytes()
    (header_length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + header_length])
    return 8 + header_length + header[key]["data_offsets"][0]


def test_a_flipped_byte_is_refused_naming_the_shard(saved):
    final, arrays = saved
    path = final / sc.shard_name(1, 0)
    raw = bytearray(path.read_bytes())
    raw[tensor_offset(path, "model/col2") + 3] ^= 0x10
    path.write_bytes(bytes(raw))
    checkpoint = ShardedCheckpoint(final)
    with pytest.raises(CheckpointError, match=r"shard-tp001-dp00000\.safetensors is corrupt.*model/col2"):
        checkpoint.read("model/col2", Piece(1, 2, 0, 2, flat=True))
    with pytest.raises(CheckpointError, match="shard-tp001-dp00000"):
        checkpoint.read_full("model/col2")
    np.testing.assert_array_equal(checkpoint.read_full("model/row"), arrays["model/row"])  # other tensors still read


def test_a_changed_sidecar_is_refused(saved):
    final, _ = saved
    sidecar = final / sc.sidecar_name(0, 1)
    sidecar.write_text(sidecar.read_text().replace('"float32"', '"float64"', 1))
    with pytest.raises(CheckpointError, match=r"shard-tp000-dp00001\.json is corrupt"):
        ShardedCheckpoint(final).read("model/col1", Piece(0, 2, 1, 2, flat=True))


def test_missing_or_malformed_files_are_named(saved):
    final, _ = saved
    (final / sc.shard_name(1, 1)).unlink()
    with pytest.raises(CheckpointError, match=r"shard file shard-tp001-dp00001\.safetensors is missing"):
        ShardedCheckpoint(final)
    (final / sc.MANIFEST).write_text('{"format": "mg-sharded-checkpoint", "version": 1}')
    with pytest.raises(CheckpointError, match=r"manifest.json lacks \['tp'"):
        ShardedCheckpoint(final)
    (final / sc.MANIFEST).unlink()
    with pytest.raises(CheckpointError, match="manifest.*manifest.json is missing"):
        ShardedCheckpoint(final)


def test_commit_checks_shards_and_refuses_an_existing_directory(tmp_path):
    layouts = {"model/replicated": LAYOUTS["model/replicated"]}
    full = full_arrays()["model/replicated"]
    final = tmp_path / "step_000000001"
    partial = sc.partial_dir(final)
    sc.write_shard(partial, 0, 0, {"model/replicated": stored_piece(full, layouts["model/replicated"], 0, 1, 0, 2)})
    with pytest.raises(CheckpointError, match="shard-tp000-dp00001.json is missing"):
        sc.build_manifest(partial, 1, 2, layouts)
    with pytest.raises(CheckpointError, match="wrong stored shape.*model/col1"):
        sc.build_manifest(partial, 1, 1, {**layouts, "model/col1": LAYOUTS["model/col1"]})
    sc.write_shard(partial, 0, 1, {"model/replicated": stored_piece(full, layouts["model/replicated"], 0, 1, 1, 2)})
    manifest = sc.build_manifest(partial, 1, 2, layouts)
    (partial / sc.shard_name(0, 1)).rename(tmp_path / "aside")
    with pytest.raises(CheckpointError, match="shard-tp000-dp00001.safetensors is missing"):
        sc.commit(partial, final, manifest)
    assert not (partial / sc.MANIFEST).exists()
    (tmp_path / "aside").rename(partial / sc.shard_name(0, 1))
    final.mkdir()
    with pytest.raises(FileExistsError, match="step_000000001 already exists"):
        sc.commit(partial, final, manifest)
    final.rmdir()
    sc.commit(partial, final, manifest)
    np.testing.assert_array_equal(ShardedCheckpoint(final).read_full("model/replicated"), full)


def test_manager_lists_prunes_and_cleans_directories(tmp_path):
    arrays, layouts = full_arrays(), {"model/col1": LAYOUTS["model/col1"]}
    manager = CheckpointManager(tmp_path, keep_last=2)
    manager.save(1, {"w": np.zeros(2, np.float32)})
    for step in (2, 3):
        save_sharded(manager.final_dir_for(step), arrays, layouts, 2, 1)
    partial = manager.partial_dir_for(4)  # a save killed before its commit
    sc.write_shard(partial, 0, 0, {"model/col1": np.zeros(12, np.float32)})
    assert manager.list() == [manager.path_for(1), manager.final_dir_for(2), manager.final_dir_for(3)]
    assert manager.resolve("latest") == manager.final_dir_for(3)
    assert find_checkpoint(manager.final_dir_for(2), "--x") == manager.final_dir_for(2)

    manager.prune()
    assert manager.list() == [manager.final_dir_for(2), manager.final_dir_for(3)]
    half_removed = manager.final_dir_for(2)
    (half_removed / sc.MANIFEST).unlink()  # a prune interrupted after its first removal
    assert manager.list() == [manager.final_dir_for(3)]
    with pytest.raises(CheckpointError, match="incomplete"):
        find_checkpoint(half_removed, "--train.resume")
    CheckpointManager(tmp_path)  # cleanup on construction
    assert not partial.exists() and not half_removed.exists()
    assert manager.list() == [manager.final_dir_for(3)]

    partial = manager.partial_dir_for(5)
    for t in range(2):
        sc.write_shard(partial, t, 0, {"model/col1": stored_piece(arrays["model/col1"], layouts["model/col1"],
                                                                  t, 2, 0, 1)})
    committed = manager.commit_sharded(5, sc.build_manifest(partial, 2, 1, layouts))
    assert committed == manager.final_dir_for(5)
    assert manager.list() == [manager.final_dir_for(3), manager.final_dir_for(5)]
    np.testing.assert_array_equal(ShardedCheckpoint(committed).read_full("model/col1"), arrays["model/col1"])


def tiny_sharded_dit(ckpt_dir):
    """A tiny DiT's weights, EMA shadows and AdamW moments saved as dp=2 x tp=2 shards; returns (dir, model, ema)."""
    config = DiTConfig(flavor="tiny", text_encoders={"ul2": 8}, max_t=2, max_h=4, max_w=4)
    model = MovieGenDiT(config)
    weights = state_dict(model)
    rng = np.random.default_rng(3)
    ema = {name: (value + rng.standard_normal(value.shape)).astype(np.float32) for name, value in weights.items()}
    arrays, layouts = {}, {}
    for name, info in shard_plan(model, dp=2, tp=2).items():
        for key, value in ((f"model/{name}", weights[name]), (f"ema/{name}", ema[name]),
                           (f"optimizer/adam_m.{name}", np.zeros_like(weights[name]))):
            arrays[key], layouts[key] = value, TensorLayout(info.full_shape, info.tp_mode, info.parts)
    arrays["optimizer/global_step"], layouts["optimizer/global_step"] = np.asarray(3, np.int32), \
        TensorLayout((), split=False)
    final = save_sharded(Path(ckpt_dir) / "step_000000003", arrays, layouts, 2, 2,
                         {"step": 3, "dit_config": config_to_dict(config)})
    return final, weights, ema


def test_consolidation_tool_and_inference_loading(tmp_path, monkeypatch, capsys):
    import runpy

    from mg.pipelines.text_to_video import load_dit_checkpoint, load_pipeline

    final, weights, ema = tiny_sharded_dit(tmp_path / "ckpt")
    got, metadata = consolidate(final)
    assert metadata["step"] == 3 and sorted(got) == sorted(ema)
    for name in ema:
        np.testing.assert_array_equal(got[name], ema[name])
    raw, _ = consolidate(final, prefer_ema=False)
    for name in weights:
        np.testing.assert_array_equal(raw[name], weights[name])

    tool = ROOT / "tools" / "consolidate_checkpoint.py"
    monkeypatch.setattr(sys, "argv", [str(tool), "--checkpoint", str(tmp_path / "ckpt"),
                                      "--output", str(tmp_path / "dit")])
    runpy.run_path(str(tool), run_name="__main__")
    assert "consolidated" in capsys.readouterr().out
    exported = state_dict(load_dit(tmp_path / "dit"))
    for name in ema:
        np.testing.assert_array_equal(exported[name], ema[name])
    written, source = export_dit(final, tmp_path / "dit_raw", prefer_ema=False)
    assert source == final
    np.testing.assert_array_equal(state_dict(load_dit(written))["blocks.0.attn.qkv.weight"],
                                  weights["blocks.0.attn.qkv.weight"])
    with pytest.raises(FileExistsError):
        export_dit(final, tmp_path / "dit_raw")

    loaded = state_dict(load_dit_checkpoint(str(final)))
    np.testing.assert_array_equal(loaded["blocks.1.ffn.w13.weight"], ema["blocks.1.ffn.w13.weight"])
    pipeline = load_pipeline(str(final), str(ROOT / "checkpoints" / "random_tiny" / "tae.safetensors"),
                             text_emb_folders={"ul2": str(tmp_path)})
    np.testing.assert_array_equal(state_dict(pipeline.dit)["blocks.0.attn.proj.weight"],
                                  ema["blocks.0.attn.proj.weight"])
