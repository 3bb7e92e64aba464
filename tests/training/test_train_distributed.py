"""train.py under msrun: a tensor-parallel run (TP=2 with SP, 2 processes) ends with the same weights as the
single-process run; its checkpoint is a per-rank directory that one process resumes and the consolidation tool
turns into a model file."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import train
from mg.models.dit import load_dit
from mg.parallel import is_sharded_checkpoint
from mg.training.checkpoint import CheckpointManager
from mg.training.state_io import read_spaces

from training.cached_dataset import train_args, write_cached_dataset

pytestmark = [pytest.mark.msrun, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def final(output):
    return read_spaces(CheckpointManager(Path(output) / "ckpt").latest())[0]


def test_tensor_parallel_training_matches_one_process(tmp_path):
    data = write_cached_dataset(tmp_path / "data")
    common = ["--env.mode", "1", "--valid.csv_path", "null", "--dataset.text_drop_prob", "0"]
    train.main(train_args(data, tmp_path / "single", 3, common))

    bindir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bindir}:{os.environ.get('PATH', '')}", GLOG_v="3")
    args = train_args(data, tmp_path / "tp2", 3, common + ["--env.distributed", "true", "--parallel.tp", "2",
                                                           "--parallel.sp", "true"])
    proc = subprocess.run([str(bindir / "msrun"), "--worker_num=2", "--local_worker_num=2",
                           f"--master_port={free_port()}", f"--log_dir={tmp_path / 'msrun_log'}", "--join=True",
                           str(REPO / "train.py"), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    logs = "\n".join(p.read_text()[-2000:] for p in sorted((tmp_path / "msrun_log").glob("worker_*.log")))
    assert proc.returncode == 0, logs

    single, parallel = final(tmp_path / "single"), final(tmp_path / "tp2")
    for space in ("model", "ema", "optimizer"):
        assert sorted(parallel[space]) == sorted(single[space]), space
        for name, value in single[space].items():
            np.testing.assert_allclose(parallel[space][name], value, rtol=1e-5, atol=1e-6, err_msg=f"{space}/{name}")
    sharded = CheckpointManager(tmp_path / "tp2" / "ckpt").latest()
    assert is_sharded_checkpoint(sharded) and len(list(sharded.glob("shard-*.safetensors"))) == 2  # tp2 x dp1
    subprocess.run([sys.executable, str(REPO / "tools" / "consolidate_checkpoint.py"), "--checkpoint", str(sharded),
                    "--output", str(tmp_path / "exported")], check=True, cwd=REPO)
    model = load_dit(tmp_path / "exported")
    for param in model.trainable_params():
        np.testing.assert_array_equal(param.asnumpy(), parallel["ema"][param.name], err_msg=param.name)

    # one process continues the tensor-parallel run from its per-rank checkpoint: steps 4-5 as the single run's
    train.main(train_args(data, tmp_path / "single", 5, common + ["--train.resume", "latest"]))
    train.main(train_args(data, tmp_path / "tp2", 5, common + ["--train.resume", "latest"]))
    single, moved = final(tmp_path / "single"), final(tmp_path / "tp2")
    for name, value in single["model"].items():
        np.testing.assert_allclose(moved["model"][name], value, rtol=1e-5, atol=1e-6, err_msg=name)
