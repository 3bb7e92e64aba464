"""Launching a test's workers under msrun on CPU and collecting what each rank wrote (<out_dir>/rank_<r>.json)."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(workers, script, args, out_dir, cwd, timeout=900):
    """Run `script args` on `workers` msrun workers; {rank: its JSON results}. A rank that wrote nothing, or wrote a
    traceback under "__error__", fails the test with the workers' logs."""
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ.get('PATH', '')}", GLOG_v="3")
    cmd = [str(bin_dir / "msrun"), f"--worker_num={workers}", f"--local_worker_num={workers}",
           f"--master_port={free_port()}", f"--log_dir={Path(out_dir) / 'log'}", "--join=True", str(script),
           *map(str, args)]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    results = {}
    for rank in range(workers):
        path = Path(out_dir) / f"rank_{rank}.json"
        if not path.exists():
            logs = "\n".join(p.read_text()[-3000:] for p in sorted((Path(out_dir) / "log").glob("worker_*.log")))
            pytest.fail(f"msrun ({script}) rank {rank} wrote no results (exit {proc.returncode}):\n{logs}")
        results[rank] = json.loads(path.read_text())
        if "__error__" in results[rank]:
            pytest.fail(f"msrun ({script}) rank {rank} failed:\n{results[rank]['__error__']}")
    return results
