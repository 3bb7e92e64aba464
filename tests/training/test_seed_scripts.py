"""The seed's three stage scripts run as written (same options and values; tests/training/seed_stages.py lists the
few a CPU test changes) under msrun with 4 workers: stage 1 for 2 steps, stage 2 from stage 1's checkpoint, stage 3
from stage 2's, each growing the positional tables as its stage says; and so do the project's scripts/stage*.sh,
which launch the layouts that fit (here with 4 workers), and its stage 4 (quality fine-tuning from stage 3 on a
curated CSV of 768 px videos, 32 frames here)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mg.training.checkpoint import find_checkpoint
from mg.training.state_io import read_spaces

from msrun_launch import free_port, launch
from training.seed_stages import STAGE4_CPU_BUCKETS, cpu_changes, write_stage_data

pytestmark = [pytest.mark.msrun, pytest.mark.slow]

HERE = Path(__file__).parent
ROOT = HERE.parents[1]


def checkpoint(run):
    """(namespaces, metadata) of a run's newest checkpoint: a per-rank directory under msrun."""
    return read_spaces(find_checkpoint(Path(run) / "ckpt", "test"))


def model_weights(run):
    spaces, metadata = checkpoint(run)
    return spaces["model"], metadata


def test_the_seed_stage_scripts_run_as_written_under_msrun(tmp_path):
    data = write_stage_data(tmp_path / "datasets")
    results = launch(4, HERE / "seed_stages_worker.py", [data, tmp_path], tmp_path, cwd=HERE, timeout=1200)
    assert all(result == {"stage1": 2, "stage2": 2, "stage3": 2} for result in results.values()), results
    stage1, meta1 = model_weights(tmp_path / "stage1")
    stage2, meta2 = model_weights(tmp_path / "stage2")
    stage3, _ = model_weights(tmp_path / "stage3")
    assert "ema" not in checkpoint(tmp_path / "stage1")[0]  # --train.ema "" disabled the EMA
    assert "val_loss" not in (tmp_path / "stage1" / "log.jsonl").read_text()  # --valid.dataset "" disabled validation
    assert meta2["config"]["train"]["optimizer"]["lr"] == 1e-4  # train.lr_scheduler.lr, the seed's name
    assert meta2["config"]["dataloader"]["batch_size"] == {"image_batch_size": 1, "video_batch_size": 1}
    tables = [{axis: w[f"pos_embed.table_{axis}"].shape[0] for axis in "thw"} for w in (stage1, stage2, stage3)]
    assert tables == [{"t": 1, "h": 32, "w": 32}, {"t": 32, "h": 64, "w": 64}, {"t": 32, "h": 192, "w": 192}]
    # stage 2 started from stage 1 (two warm-up steps move the weights by far less than a fresh start would)
    np.testing.assert_allclose(stage2["blocks.0.ffn.w13.weight"], stage1["blocks.0.ffn.w13.weight"], atol=1e-3)
    np.testing.assert_array_equal(stage2["pos_embed.table_h"][:32].shape, stage1["pos_embed.table_h"].shape)
    assert np.abs(stage2["pos_embed.table_h"][:32] - stage1["pos_embed.table_h"]).max() < 1e-3  # rows kept (extend)


def test_the_project_stage_scripts_launch_the_four_stages(tmp_path):
    data = write_stage_data(tmp_path / "datasets")
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ.get('PATH', '')}", MODEL="1B", WORKERS="4", DATA=str(data),
               BIND_CORE="False", GLOG_v="3")
    runs = {stage: tmp_path / f"stage{stage}" for stage in (1, 2, 3, 4)}
    scripts = {1: "stage1_t2i_256px.sh", 2: "stage2_t2iv_256px.sh", 3: "stage3_t2iv_768px.sh", 4: "stage4_sft_768px.sh"}
    for stage, script in scripts.items():
        extra = {"STAGE1_DIR": str(runs[1]), "STAGE2_DIR": str(runs[2]), "STAGE3_DIR": str(runs[3]), "SEED": "7"}
        cpu = cpu_changes(data) + (STAGE4_CPU_BUCKETS if stage == 4 else [])
        proc = subprocess.run(["bash", str(ROOT / "scripts" / script), *cpu], cwd=tmp_path, timeout=900,
                              env=dict(env, OUTPUT=str(runs[stage]), PORT=str(free_port()), **extra),
                              capture_output=True, text=True)
        logs = "\n".join(p.read_text()[-2000:] for p in sorted(runs[stage].glob("worker_*.log")))
        assert proc.returncode == 0, f"{script}: {proc.stderr[-2000:]}\n{logs}"
        weights, metadata = model_weights(runs[stage])
        assert metadata["step"] == 2 and metadata["config"]["parallel"]["tp"] == 1  # 1B's layout: data parallel
    assert weights["pos_embed.table_h"].shape[0] == 192  # stage 3 grew from stage 2's tables; stage 4 keeps them
    config = metadata["config"]
    assert config["env"]["seed"] == 7 and config["train"]["lr_scheduler"]["policy"] == "cosine"
    assert config["dataset"]["csv_path"].endswith("video_caption_curated.csv") and not config["train"].get("ema")
    stage3, _ = model_weights(runs[3])
    assert np.abs(weights["blocks.0.ffn.w13.weight"] - stage3["blocks.0.ffn.w13.weight"]).max() < 1e-3  # from stage 3
