"""Fault injection: SIGKILL train.py at random moments (many of them inside an atomic write of mg.io, most of those
inside a checkpoint save) and restart it with --train.resume latest each time. After every restart: the temporaries
and half-written checkpoints of the killed process are gone, and the run resumed from the newest complete
checkpoint. At the end: one log row per step, and the weights of a run that was never interrupted.

One "zygote" process imports train.py (and MindSpore) once and forks a child per start, so the ~25 starts cost
seconds, not minutes. A child told to stall sleeps in the k-th `os.replace` of its atomic writes into a given
place (a checkpoint's tensors or sidecar, or any file of the run) and the test kills it there; otherwise the test
kills it after a random delay. The first kill lands in the first checkpoint's write, so the first restart finds a run
without a complete checkpoint and must start it again from step 0.
"""
import json
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from mg.io import is_complete, load_checkpoint
from mg.training.checkpoint import split_namespaces

from training.cached_dataset import train_args, write_cached_dataset

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
KILLS = 22

ZYGOTE = textwrap.dedent("""
    import json, os, sys, time, traceback
    import train

    def run(args, stall_at, stall_in, stderr_path):
        err = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(err, 2)
        real_replace, calls = os.replace, []
        def replace(src, dst):  # the last step of every atomic write of mg.io
            if stall_in in str(dst):
                calls.append(dst)
            if len(calls) == stall_at:
                print("STALL", dst, flush=True)
                time.sleep(600)
            return real_replace(src, dst)
        os.replace = replace
        try:
            train.main(args)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)

    print("READY", flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        pid = os.fork()
        if pid == 0:
            run(command["args"], command["stall_at"], command["stall_in"], command["stderr"])
        print("PID", pid, flush=True)
        _, status = os.waitpid(pid, 0)
        print("EXIT", os.waitstatus_to_exitcode(status), flush=True)
""")


def leftovers(output):
    """Temporaries of atomic writes and tensor files without a sidecar: {path: inode}."""
    found = {}
    for path in Path(output).rglob("*"):
        if ".mg-tmp-" in path.name or (path.suffix == ".safetensors" and not path.with_suffix(".json").exists()):
            if not any(".mg-tmp-" in parent.name for parent in path.parents):
                found[path] = path.stat().st_ino
    return found


def newest_complete(output):
    done = [p for p in (Path(output) / "ckpt").glob("step_*.json") if is_complete(p)]
    return max(done, key=lambda p: p.name).with_suffix(".safetensors") if done else None


class Zygote:
    def __init__(self, cwd):
        env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", GLOG_v="3")
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE], cwd=cwd, env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.readline() == "READY"

    def readline(self):
        line = self.proc.stdout.readline()
        assert line, f"the zygote died ({self.proc.wait()})"
        return line.strip()

    def start(self, args, stderr, stall_at=0, stall_in=""):
        command = {"args": args, "stall_at": stall_at, "stall_in": stall_in, "stderr": str(stderr)}
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        kind, pid = self.readline().split()
        assert kind == "PID"
        return int(pid)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def test_sigkill_at_random_moments_then_resume_latest(tmp_path):
    data = write_cached_dataset(tmp_path / "data")
    out, straight = tmp_path / "out", tmp_path / "straight"
    common = ["--env.mode", "1", "--train.save.every", "1", "--train.save.keep_last", "2"]
    rng = random.Random(0)
    zygote = Zygote(tmp_path)
    stalled_in_checkpoints = checked = from_step_0 = 0
    try:
        for kill in range(KILLS):
            before, resume_expected = leftovers(out), newest_complete(out)
            log_size = (out / "train.log").stat().st_size if (out / "train.log").exists() else 0
            resume = ["--train.resume", "latest"] if (out / "config.yaml").exists() else []
            # where: the first checkpoint; then in turn after a random delay, in a checkpoint, in any atomic write
            stall_at, stall_in = ((1, "/ckpt/") if kill == 0 else
                                  [(0, ""), (rng.randint(1, 6), "/ckpt/"), (rng.randint(1, 8), "")][kill % 3])
            stderr = tmp_path / f"stderr_{kill}.txt"
            pid = zygote.start(train_args(data, out, 1000, common + resume), stderr, stall_at, stall_in)
            if stall_at:
                line = zygote.readline()
                assert line.startswith("STALL"), (line, stderr.read_text()[-3000:])
                stalled_in_checkpoints += "/ckpt/" in line
            else:
                time.sleep(rng.uniform(0.2, 3.0))
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:  # it ended by itself: the assertion below shows why
                pass
            assert zygote.readline() == f"EXIT {-signal.SIGKILL}", stderr.read_text()[-3000:]

            with open(out / "train.log") if (out / "train.log").exists() else open(os.devnull) as f:
                f.seek(log_size)
                started = re.findall(r"resumed from (\S+) at step|(starting from step 0)", f.read())
            if started:  # the restart got past its start: the killed process's leftovers are gone
                checked += 1
                assert [p for p, inode in before.items() if p.exists() and p.stat().st_ino == inode] == []
                resumed_from, from_zero = started[0]
                assert (Path(resumed_from) if resumed_from else None) == resume_expected, started
                assert bool(from_zero) == (resume_expected is None)
                from_step_0 += bool(from_zero)
        assert checked >= KILLS // 2 and stalled_in_checkpoints >= 8 and from_step_0 >= 1, \
            (checked, stalled_in_checkpoints, from_step_0)

        steps = int(newest_complete(out).stem.split("_")[1]) + 2
        for output, extra in ((out, ["--train.resume", "latest"]), (straight, [])):
            zygote.start(train_args(data, output, steps, common + extra), tmp_path / "stderr_final.txt")
            assert zygote.readline() == "EXIT 0", (tmp_path / "stderr_final.txt").read_text()[-3000:]
    finally:
        zygote.close()

    assert leftovers(out) == {}
    rows = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert rows == list(range(1, steps + 1))
    assert [int(line.split(",")[0]) for line in (out / "log.csv").read_text().splitlines()[1:]] == rows
    resumed, uninterrupted = (split_namespaces(load_checkpoint(newest_complete(o))[0]) for o in (out, straight))
    for space in ("model", "ema", "optimizer"):
        for name, value in uninterrupted[space].items():
            np.testing.assert_allclose(resumed[space][name], value, rtol=1e-6, atol=1e-7, err_msg=f"{space}/{name}")
