"""mg.io: atomic files and their clean-up, the checkpoint format with its checksum, name/shape checks, state dicts."""
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn
from safetensors.numpy import load_file, save_file

from mg.io import (CheckpointError, atomic_path, check_names, compare_names, load_checkpoint, load_state_dict,
                   read_metadata, remove_stale_temporaries, save_checkpoint, state_dict)

ROOT = Path(__file__).resolve().parents[1]


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


# ----------------------------------------------------------------------------------------------------------------------
# Atomic files
# ----------------------------------------------------------------------------------------------------------------------
def test_atomic_path_writes_and_refuses_to_overwrite_unless_asked(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_path(target) as temporary:
        assert temporary.name == "out.txt" and temporary.parent != target.parent
        temporary.write_text("one")
    assert target.read_text() == "one"
    with pytest.raises(FileExistsError, match="out.txt"):
        with atomic_path(target):
            pass
    target.chmod(0o400)  # as MindSpore leaves its checkpoints
    with atomic_path(target, overwrite=True) as temporary:
        temporary.write_text("two")
    assert target.read_text() == "two"
    assert os.listdir(target.parent) == ["out.txt"]


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(RuntimeError, match="writer failed"):
        with atomic_path(tmp_path / "out.safetensors") as temporary:
            temporary.write_bytes(b"half")
            (temporary.parent / ".tmpAbC123").write_bytes(b"a third-party writer's own temporary")
            raise RuntimeError("writer failed")
    with pytest.raises(FileNotFoundError, match="nothing was written"):
        with atomic_path(tmp_path / "empty.txt"):
            pass
    assert os.listdir(tmp_path) == ["keep.txt"]


def test_safetensors_temporaries_land_in_the_private_directory(tmp_path):
    """safetensors 0.8 writes '.tmpXXXXXX' beside the path it is given and renames it: watch the folder meanwhile."""
    with atomic_path(tmp_path / "w.safetensors") as temporary:
        save_file({"w": np.ones(4, np.float32)}, str(temporary))
        assert [p.name for p in tmp_path.iterdir()] == [temporary.parent.name]
    assert os.listdir(tmp_path) == ["w.safetensors"]


# A writer that dies inside atomic_path (os._exit skips every clean-up, as SIGKILL would) or waits there to be killed.
WRITER = textwrap.dedent("""
    import os, sys
    from mg.io import atomic_path

    with atomic_path(os.path.join(sys.argv[1], "cache.safetensors")) as temporary:
        temporary.write_bytes(b"partial")
        (temporary.parent / ".tmpXyZ789").write_bytes(b"partial")  # what safetensors' save_file leaves when killed
        if sys.argv[2] == "exit":
            os._exit(0)
        print("WRITING", flush=True)
        sys.stdin.readline()
""")


def _hidden(folder):
    return sorted(p.name for p in Path(folder).rglob("*") if p.is_dir())


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    nested = tmp_path / "ab"
    nested.mkdir()
    subprocess.run([sys.executable, "-c", WRITER, str(nested), "exit"], check=True)  # waited for: the pid is dead
    [stale] = _hidden(nested)
    assert os.listdir(nested / stale) and not (nested / "cache.safetensors").exists()
    assert remove_stale_temporaries(tmp_path) == []  # not recursive: the subfolder is not looked at
    assert remove_stale_temporaries(tmp_path, recursive=True) == [nested / stale]
    assert _hidden(tmp_path) == ["ab"] and os.listdir(nested) == []


def test_temporaries_of_running_writers_are_kept(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), "wait"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "WRITING"
        [running] = _hidden(tmp_path)
        assert remove_stale_temporaries(tmp_path) == []
    finally:
        child.kill()
        child.wait()
        child.stdin.close()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert remove_stale_temporaries(tmp_path) == [tmp_path / running]
    assert os.listdir(tmp_path) == []

    # This process's own write in progress is kept; a directory with this pid that no write of ours holds is from an
    # earlier process that had the same pid (containers restart with the same pids) and goes.
    with atomic_path(tmp_path / "own.txt") as temporary:
        temporary.write_text("x")
        assert remove_stale_temporaries(tmp_path) == []
        own = temporary.parent.name
    (tmp_path / own).mkdir()
    other_host = own.replace(socket.gethostname(), "some-other-host")
    (tmp_path / other_host).mkdir()  # on a shared file system this host cannot tell whether that writer runs
    assert remove_stale_temporaries(tmp_path) == [tmp_path / own]
    assert sorted(os.listdir(tmp_path)) == sorted([other_host, "own.txt"])


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoint files
# ----------------------------------------------------------------------------------------------------------------------
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
    assert sidecar["version"] == 2 and len(sidecar["tensors_sha256"]) == 64
    assert read_metadata(tmp_path / "ck") == meta
    assert sorted(os.listdir(tmp_path)) == ["ck.json", "ck.safetensors"]


def test_flipped_data_byte_is_refused_naming_the_file(tmp_path):
    save_checkpoint(tmp_path / "ck", {"w": np.zeros(64, np.float32)}, {})
    data = bytearray((tmp_path / "ck.safetensors").read_bytes())
    data[-3] ^= 0x40  # inside the last float: the header and the size stay valid
    (tmp_path / "ck.safetensors").write_bytes(bytes(data))
    assert load_file(str(tmp_path / "ck.safetensors"))["w"].any()  # safetensors alone reads it without complaint
    with pytest.raises(CheckpointError, match=r"ck.safetensors is corrupt: its SHA-256 differs"):
        load_checkpoint(tmp_path / "ck")


def test_sidecars_without_a_checksum_still_load(tmp_path):
    save_checkpoint(tmp_path / "old", {"w": np.arange(3, dtype=np.float32)}, {"step": 3})
    record = json.loads((tmp_path / "old.json").read_text())
    del record["tensors_sha256"]
    record["version"] = 1
    (tmp_path / "old.json").write_text(json.dumps(record))
    tensors, meta = load_checkpoint(tmp_path / "old")
    np.testing.assert_array_equal(tensors["w"], np.arange(3, dtype=np.float32))
    assert meta == {"step": 3}
    record["version"] = 2  # a version-2 sidecar must have one
    (tmp_path / "old.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match=r"old.json lacks \['tensors_sha256'\]"):
        load_checkpoint(tmp_path / "old")
    record["version"] = 3
    (tmp_path / "old.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="version 3"):
        load_checkpoint(tmp_path / "old")
    # the committed toy transformer was written before checksums
    assert "dit_config" in load_checkpoint(ROOT / "checkpoints" / "toy" / "dit.safetensors")[1]


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


# ----------------------------------------------------------------------------------------------------------------------
# Names and shapes, state dicts
# ----------------------------------------------------------------------------------------------------------------------
def test_name_check_lists_missing_unexpected_and_mismatched():
    expected = {"a": (2, 3), "b": np.zeros(4), "c": ms.Parameter(ms.Tensor(np.zeros((1, 2), np.float32)), name="c")}
    given = {"b": np.zeros(5), "c": np.zeros((1, 2)), "d": (7,)}
    result = compare_names(expected, given)
    assert result == (["a"], ["d"], ["b: (5,) vs expected (4,)"])
    with pytest.raises(CheckpointError) as err:
        check_names(expected, given, "file.safetensors does not fit the model")
    assert str(err.value) == ("file.safetensors does not fit the model: 1 missing [a]; 1 unexpected [d]; "
                              "1 shape mismatch [b: (5,) vs expected (4,)]")
    check_names(expected, {"a": (2, 3), "b": (4,), "c": (1, 2)}, "fits")
    many = {f"n{i:02d}": (1,) for i in range(25)}
    with pytest.raises(CheckpointError, match=r"25 missing \[n00, .*, n19, \.\.\. \(5 more\)\]"):
        check_names(many, {}, "x")


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


def test_strict_load_lists_every_problem_naming_the_source_and_loads_nothing():
    net = TinyNet()
    before = net.norm.gamma.asnumpy().copy()
    tensors = state_dict(TinyNet(width=4))
    tensors["norm.gamma"] = np.full(4, 7.0, np.float32)
    del tensors["proj.bias"]
    tensors["extra.w"] = np.zeros(2, np.float32)
    tensors["proj.weight"] = np.zeros((5, 3), np.float32)
    with pytest.raises(CheckpointError) as err:
        load_state_dict(net, tensors, source="run/net.safetensors")
    message = str(err.value)
    assert message.startswith("run/net.safetensors does not fit TinyNet: ")
    for piece in ("1 missing [proj.bias]", "1 unexpected [extra.w]", "proj.weight: (5, 3) vs expected (4, 3)"):
        assert piece in message
    np.testing.assert_array_equal(net.norm.gamma.asnumpy(), before)

    result = load_state_dict(net, tensors, strict=False)
    assert result.missing == ["proj.bias"] and result.unexpected == ["extra.w"]
    assert len(result.mismatched) == 1 and result.mismatched[0].startswith("proj.weight")
    np.testing.assert_array_equal(net.norm.gamma.asnumpy(), np.full(4, 7.0, np.float32))


def test_state_dict_is_a_snapshot_not_a_view():
    net = TinyNet()
    tensors = state_dict(net)
    before = tensors["proj.weight"].copy()
    tensors["proj.weight"][0, 0] = 123.0  # writing into the snapshot must not touch the model...
    assert net.proj.weight.asnumpy()[0, 0] == before[0, 0]
    net.proj.weight.set_data(ms.Tensor(np.zeros((4, 3), np.float32)))  # ...nor the model the snapshot
    assert tensors["proj.weight"][0, 1] == before[0, 1]


class JittedForward:
    """A jitted function that holds its model, as the trainers' steps do. (A Cell passed as an argument is looked at
    anew on every call: such a function sees set_data too and would not tell.)"""

    def __init__(self, net):
        self.net = net
        self.run = ms.jit(self._run)

    def _run(self, x):
        return self.net(x)


def test_load_state_dict_reaches_an_already_compiled_graph():
    net = TinyNet()
    forward = JittedForward(net)
    x = ms.Tensor(np.ones((2, 3), np.float32))
    forward.run(x)  # compile first, as a trainer resuming mid-run would have
    other = TinyNet()
    other.proj.weight.set_data(ms.Tensor(np.full((4, 3), 0.5, np.float32)))
    other.norm.gamma.set_data(ms.Tensor(np.arange(4, dtype=np.float32)))
    load_state_dict(net, state_dict(other))
    np.testing.assert_allclose(forward.run(x).asnumpy(), other(x).asnumpy(), rtol=1e-6)
