"""SIGKILL a real subprocess in the middle of a checkpoint save: the previous checkpoint must stay loadable."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from mg.io import load_checkpoint
from mg.training.checkpoint import CheckpointManager

# The child saves step 1, then starts saving step 2 and is killed by the parent. With a stall point it blocks inside
# the save (a hook on os.replace: 1 = tensors written to a temporary, 2 = tensors renamed but sidecar not) and reports
# it; without one it writes a big tensor and the parent kills it after a delay, wherever it happens to be (often
# inside safetensors' own temporary file, which lands in mg.io's temporary directory).
CHILD = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    import mg.training.checkpoint as ck

    directory, stall_at, big = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    mgr = ck.CheckpointManager(directory, keep_last=1)
    mgr.save(1, {"w": np.arange(12, dtype=np.float32).reshape(3, 4)}, {"note": "first"})

    calls = []
    real_replace = os.replace
    def replace_with_stall(src, dst):
        calls.append(dst)
        if len(calls) == stall_at:
            print("STALLED", flush=True)
            time.sleep(600)
        return real_replace(src, dst)
    os.replace = replace_with_stall

    second = {"w": np.ones((3, 4), np.float32), "big": np.ones(big, np.float32)}
    print("SAVING", flush=True)
    mgr.save(2, second, {"note": "second"})
    print("SAVED", flush=True)
    time.sleep(600)
""")


def _run_and_kill(directory, stall_at, big, wait_for, delay=0.0):
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(directory), str(stall_at), str(big)],
                             stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            line = child.stdout.readline()
            assert line, f"child exited early with code {child.wait()}"
            if line.strip() == wait_for:
                break
            assert time.monotonic() < deadline, "child never reached the kill point"
        time.sleep(delay)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()


@pytest.mark.parametrize("stall_at", [1, 2], ids=["tensors-temporary", "tensors-renamed-no-sidecar"])
def test_sigkill_mid_save_keeps_previous_checkpoint(tmp_path, stall_at):
    _run_and_kill(tmp_path, stall_at, big=16, wait_for="STALLED")
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert any(".mg-tmp-" in name or name == "step_000000002.safetensors" for name in leftovers), leftovers

    mgr = CheckpointManager(tmp_path, keep_last=1)
    assert mgr.list() == [mgr.path_for(1)]
    assert mgr.resolve("latest") == mgr.path_for(1)
    tensors, meta = load_checkpoint(mgr.path_for(1))
    np.testing.assert_array_equal(tensors["w"], np.arange(12, dtype=np.float32).reshape(3, 4))
    assert meta == {"note": "first", "step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_000000001.json", "step_000000001.safetensors"]


def test_sigkill_during_big_save_leaves_a_complete_checkpoint(tmp_path):
    # 48 MiB takes long enough to write that the kill usually lands mid-save; wherever it lands, the newest
    # complete checkpoint must load and hold exactly what was written for its step.
    _run_and_kill(tmp_path, stall_at=0, big=12 * 2**20, wait_for="SAVING", delay=0.05)
    mgr = CheckpointManager(tmp_path, keep_last=1)
    latest = mgr.latest()
    assert latest in (mgr.path_for(1), mgr.path_for(2))
    tensors, meta = load_checkpoint(latest)
    if latest == mgr.path_for(1):
        np.testing.assert_array_equal(tensors["w"], np.arange(12, dtype=np.float32).reshape(3, 4))
    else:
        np.testing.assert_array_equal(tensors["w"], np.ones((3, 4), np.float32))
        assert tensors["big"].shape == (12 * 2**20,) and tensors["big"].min() == tensors["big"].max() == 1.0
    assert meta["step"] == int(latest.stem.split("_")[1])
    assert all(p.name.startswith("step_") for p in tmp_path.iterdir())  # no temporaries left
