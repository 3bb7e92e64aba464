"""Distributed checks under msrun on CPU: one launch with 2 workers, one with 4 (each launch costs ~15 s of start-up,
so every check of a worker count runs in the same launch; see suite_two.py / suite_four.py).

Each worker writes {check: max abs error}; errors are against NumPy (collectives) or against the single-process
model computed in the same worker (layouts, training, sampling, checkpoints)."""
from pathlib import Path

import pytest

from msrun_launch import launch

pytestmark = [pytest.mark.msrun, pytest.mark.slow]

HERE = Path(__file__).parent
TOLERANCE = 1e-5
COLLECTIVES = ("SumAcross", "CopyAcross", "GatherSharded", "ScatterSum", "SplitReplicated", "GatherReplicated")
MODEL_CHECKS = ("forward", "loss", "gradients", "weights_after_adamw", "adamw_state")


def _launch(workers, suite, out_dir):
    return launch(workers, "msrun_worker.py", [suite, out_dir], out_dir, cwd=HERE)


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    return _launch(2, "two", tmp_path_factory.mktemp("msrun_two"))


@pytest.fixture(scope="module")
def four_workers(tmp_path_factory):
    return _launch(4, "four", tmp_path_factory.mktemp("msrun_four"))


def _assert_checks(results, names):
    """Every named check exists on every rank and is within tolerance."""
    for rank, checks in results.items():
        missing = [n for n in names if n not in checks]
        assert not missing, f"rank {rank}: checks missing {missing}"
        worst = checks.get("__worst__", {})
        bad = {n: (checks[n], worst.get(n, "")) for n in names if not checks[n] <= TOLERANCE}
        assert not bad, f"rank {rank}: errors above {TOLERANCE} (value, worst array): {bad}"


def _collective_names(prefix, groups, ops=COLLECTIVES, axes=(0, 1), suffix=""):
    return [f"{prefix}/{g}/{op}/axis{a}{suffix}" for g in groups for op in ops for a in axes]


def test_collectives_on_the_world_group_match_numpy(two_workers):
    _assert_checks(two_workers, _collective_names("world2", ["dp"]))


def test_collectives_on_sub_groups_match_numpy(four_workers):
    # d2t2: tp = {0,1},{2,3} and dp = {0,2},{1,3} are sub-groups (emulated all-gather), world is native
    _assert_checks(four_workers, _collective_names("d2t2", ["tp", "dp", "world"]))
    _assert_checks(four_workers, _collective_names("c2t2", ["tp"], ("GatherSharded", "ScatterSum",
                                                                    "SplitReplicated"), (1,), "/jit"))


@pytest.mark.parametrize("layout", ["tp2", "cp2", "dp2_zero0", "dp2_zero1", "dp2_zero2", "dp2_zero3", "dp2_zero1_mate",
                                    "dp2_zero3_mate"])
def test_two_process_layout_equals_single_process(two_workers, layout):
    _assert_checks(two_workers, [f"model/{layout}/{c}" for c in MODEL_CHECKS])


@pytest.mark.parametrize("layout", ["d2t2_sp_zero3", "c2t2_sp", "d2c2_zero2"])
def test_four_process_layout_equals_single_process(four_workers, layout):
    _assert_checks(four_workers, [f"model/{layout}/{c}" for c in MODEL_CHECKS])


def test_dp2_training_run_equals_one_process_with_twice_the_batch(two_workers):
    _assert_checks(two_workers, ["train/dp2_zero1/losses", "train/dp2_zero1/weights"])


def test_sequence_and_context_parallel_sampling_gives_the_single_process_video(two_workers, four_workers):
    _assert_checks(two_workers, ["sample/tp2_sp", "sample/cp2"])
    _assert_checks(four_workers, ["sample/c2t2_sp"])


def test_byte_meter_counts_the_gradient_reduction_exactly(two_workers):
    _assert_checks(two_workers, ["meter/dp2_zero0", "meter/dp2_zero2"])


def test_jitted_tensor_parallel_step_equals_single_process(two_workers):
    _assert_checks(two_workers, ["jit/tp2/weights_after_adamw", "jit/tp2_recompute/weights_after_adamw"])


@pytest.mark.parametrize("suite,layout", [("two", "tp2"), ("four", "d2t2_sp_zero3")])
def test_checkpoint_moves_between_layouts(two_workers, four_workers, suite, layout):
    results = two_workers if suite == "two" else four_workers
    _assert_checks(results, [f"ckpt/{layout}/{c}" for c in ("single_process_forward", "reloaded_forward",
                                                             "reloaded_adamw_state")])


def test_the_memory_plan_equals_what_each_layout_allocates(two_workers):
    parts = ("weights", "gradients", "optimizer", "accumulation", "ema")
    _assert_checks(two_workers, [f"plan/{layout}/{part}" for layout in ("cp2", "tp2_sp", "dp2_zero3", "dp2_zero1",
                                                                        "dp2_zero2")
                                 for part in parts] + ["plan/cp2/activations"])


@pytest.mark.parametrize("suite,layout", [("two", "tp2"), ("two", "dp2_zero3"), ("four", "tp4"), ("four", "dp4_zero3")])
def test_building_a_model_holds_only_this_ranks_share(two_workers, four_workers, suite, layout):
    """Peak memory while building at most 1.5x the rank's own parameters; the pieces are the one-process model's."""
    results = two_workers if suite == "two" else four_workers
    for rank, checks in results.items():
        ratio = checks[f"build/{layout}/memory_ratio"]
        assert checks[f"build/{layout}/memory"] == 0, f"rank {rank}: {checks['__worst__'][f'build/{layout}/memory']}"
        assert ratio > 0.5, f"rank {rank}: building rose only {ratio:.2f}x the shard: not measured"
        assert checks[f"build/{layout}/equals_one_process"] == 0, f"rank {rank}"


@pytest.mark.parametrize("suite,dp", [("two", 2), ("four", 4)])
def test_zero2_accumulates_this_ranks_slices_only(two_workers, four_workers, suite, dp):
    results = two_workers if suite == "two" else four_workers
    _assert_checks(results, [f"zero2/dp{dp}/{c}" for c in ("losses", "weights", "accumulation_bytes")])
    for checks in results.values():
        assert 0.99 * dp < checks[f"zero2/dp{dp}/whole_buffers_ratio"] <= dp


@pytest.mark.parametrize("suite,layout", [("two", "dp2_zero3"), ("four", "d2t2_zero1")])
def test_per_rank_checkpoints_resume_exactly_and_move_between_layouts(two_workers, four_workers, suite, layout):
    results = two_workers if suite == "two" else four_workers
    parts = ("weights", "adamw_state", "ema")
    names = [f"sharded/{layout}/{c}" for c in ("resume_losses", "consolidated_ema", "planned_checkpoint_bytes")] + [
        f"sharded/{layout}/{where}/{part}" for where in ("resume", "other_layout", "one_process") for part in parts]
    for rank, checks in results.items():
        missing = [n for n in names if n not in checks]
        assert not missing, f"rank {rank}: {missing} ({checks.get('__error__', '')[-2000:]})"
        wrong = {n: (checks[n], checks["__worst__"].get(n)) for n in names if checks[n] != 0}
        assert not wrong, f"rank {rank}: not bit-exact: {wrong}"
