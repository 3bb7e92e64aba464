"""SIGKILL a process in the middle of a sharded (per-rank) checkpoint save, at 12 points spread over the save: the
newest complete checkpoint is always loadable and holds its own step's values, and the next start leaves nothing
else behind. One process plays the four ranks of a dp2 x tp2 layout (shards, then the commit and the pruning)."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from mg.parallel import ShardedCheckpoint
from mg.training.checkpoint import CheckpointManager

KILLS = 12
CHILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    from mg.parallel.layers import shard_flat, shard_tp
    from mg.parallel.sharded_checkpoint import TensorLayout, build_manifest, write_shard
    from mg.training.checkpoint import CheckpointManager

    directory, numel = sys.argv[1], int(sys.argv[2])
    layouts = {"model/w": TensorLayout((8, numel // 8), "column", 2), "ema/w": TensorLayout((8, numel // 8), "row")}

    def save(manager, step):
        partial = manager.partial_dir_for(step)
        for t in range(2):
            for d in range(2):
                pieces = {key: shard_flat(shard_tp(np.full(layout.full_shape, step, np.float32), layout.tp_mode,
                                                   layout.parts, t, 2), d, 2) for key, layout in layouts.items()}
                write_shard(partial, t, d, pieces)
        manager.commit_sharded(step, build_manifest(partial, 2, 2, layouts, {"step": step}))

    manager = CheckpointManager(directory, keep_last=1)
    if manager.latest() is None:
        save(manager, 1)
    print("SAVING", flush=True)
    start = time.perf_counter()
    save(manager, 2)
    print(f"SAVED {time.perf_counter() - start}", flush=True)
""")
NUMEL = 2 ** 22  # 16 MB per tensor: a save takes long enough to be hit anywhere


def _child(directory):
    return subprocess.Popen([sys.executable, "-c", CHILD, str(directory), str(NUMEL)], stdout=subprocess.PIPE,
                            text=True)


def _wait_for(child, word):
    line = child.stdout.readline()
    assert line.startswith(word), f"child said {line!r} (exit code {child.poll()})"
    return line


@pytest.mark.slow
def test_sigkill_anywhere_in_a_sharded_save_keeps_the_newest_complete_checkpoint(tmp_path):
    timing = _child(tmp_path / "timing")
    _wait_for(timing, "SAVING")
    duration = float(_wait_for(timing, "SAVED").split()[1])
    timing.wait(timeout=60)

    # the first kill lands at once, the last after the child reports the save done (a save's duration varies from
    # run to run, so the ends are pinned and the rest spread over the measured duration)
    delays = [0.0, *np.random.default_rng(0).uniform(0.0, duration, KILLS - 2), None]
    newest, interrupted = set(), 0
    for i, delay in enumerate(delays):
        directory = tmp_path / f"run{i}"
        child = _child(directory)
        try:
            _wait_for(child, "SAVING")
            if delay is None:
                _wait_for(child, "SAVED")
            else:
                time.sleep(delay)
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            child.stdout.close()

        interrupted += any(".mg-tmp-" in p.name or p.name.endswith(".partial") for p in directory.rglob("*"))
        manager = CheckpointManager(directory, keep_last=1)  # the next start: cleans up
        latest = manager.latest()
        assert latest is not None, f"kill {i} after {delay} s left no complete checkpoint"
        checkpoint = ShardedCheckpoint(latest)
        step = checkpoint.metadata["step"]
        newest.add(step)
        for key in ("model/w", "ema/w"):
            np.testing.assert_array_equal(checkpoint.read_full(key), np.full((8, NUMEL // 8), step, np.float32))
        left = sorted(p.name for p in directory.iterdir())
        assert left == [latest.name] or left == ["step_000000001", "step_000000002"], (i, delay, left)
        assert not [p for p in directory.rglob("*") if ".mg-tmp-" in p.name or p.name.endswith(".partial")]
    # the kills landed before the commit (step 1 newest), after it (step 2) and inside writes (leftovers cleaned)
    assert newest == {1, 2} and interrupted >= KILLS // 3, (newest, interrupted)
