"""The memory plan (mg/parallel/memory.py): exact for the tensors a run allocates, within 25% of a step's measured
activation memory on CPU (PyNative; the layouts under msrun are in tests/parallel), consistent at 5B/30B scale,
and train.py refuses a run whose plan exceeds env.max_device_memory before building anything."""
import pytest

import train
from mg.isolated import run_isolated
from mg.models.dit import dit_config, parameter_count
from mg.parallel.memory import Layout, Workload, plan_memory
from mg.training.memory_check import check_plan
from mg.training.settings import parse_memory_size

from training.cached_dataset import train_args, write_cached_dataset

D512 = dict(depth=4, dim=512, ffn_dim=1408, num_heads=8)


def test_the_planned_tensors_are_the_allocated_ones():
    config = dit_config("toy", text_encoders={"ul2": 64}, max_t=1, max_h=4, max_w=4)
    result = check_plan(config, Layout(), Workload(2, 1, 64, 64, 16, accumulation=2, compiled=False))
    plan = result["planned"]
    assert {part: getattr(plan, part) for part in result["allocated"]} == result["allocated"]
    assert plan.ema == plan.weights  # one process: the EMA is one fp32 copy of the weights
    assert plan.construction > plan.weights  # building holds the weights and one whole parameter
    assert plan.checkpoint == 4 * plan.weights  # it writes weights, two moments and the EMA


def _measured(flavor, overrides, grid, recompute, queue):
    import mg  # noqa: F401
    from mg.models.dit import dit_config
    from mg.parallel.memory import Layout, Workload
    from mg.training.memory_check import check_plan
    config = dit_config(flavor, **overrides, text_encoders={"ul2": 64}, max_t=1, max_h=grid[0], max_w=grid[1])
    result = check_plan(config, Layout(), Workload(1, 1, 16 * grid[0], 16 * grid[1], 64, recompute_every=recompute,
                                                   compiled=False))
    queue.put((result["planned"].activations, result["measured_activations"]))


@pytest.mark.slow
@pytest.mark.parametrize("flavor, overrides, grid, recompute", [("toy", {}, (64, 64), 0), ("tiny", D512, (32, 64), 0),
                                                                ("tiny", D512, (32, 64), 1),
                                                                ("tiny", dict(D512, attention="mate"), (32, 64), 0)],
                         ids=["toy-4096", "d512x4-2048", "d512x4-2048-recompute", "d512x4-mate-2048"])
def test_planned_activations_are_within_a_quarter_of_a_measured_step(flavor, overrides, grid, recompute):
    """Each case in a fresh process: MindSpore's memory pool keeps what a step used, so a second step rises by
    nothing."""
    planned, measured = run_isolated(_measured, (flavor, overrides, grid, recompute), flavor)
    assert abs(planned / measured - 1) <= 0.25, f"planned {planned / 2**20:.0f} MiB, measured {measured / 2**20:.0f}"


def test_the_plan_at_scale_divides_as_the_layout_says():
    """30B (no weights are built): TP divides the block weights; ZeRO-3 slices the projections over dp; ZeRO-1
    slices only the optimizer state; recompute keeps a block's input instead of its activations."""
    config = dit_config("30B", text_encoders={"ul2": 4096, "byt5": 1472})
    work = Workload(1, 64, 256, 448, 400, kernels="fused")
    full = plan_memory(config, Layout(dp=1), work)
    assert full.weights == 4 * parameter_count(config)
    tp8 = plan_memory(config, Layout(dp=1, tp=8), work)
    assert 0.125 < tp8.weights / full.weights < 0.14  # the blocks hold ~99% of the weights
    zero3 = plan_memory(config, Layout(dp=16, tp=8, zero_stage=3), work)
    assert 0.125 / 16 < zero3.weights / full.weights < 0.14 / 16
    zero1 = plan_memory(config, Layout(dp=16, tp=8, zero_stage=1), work)
    assert zero1.weights == tp8.weights and zero1.optimizer < tp8.optimizer / 5
    assert zero1.ema < tp8.ema / 15  # the EMA is sharded like the optimizer state
    accumulate = Workload(1, 64, 256, 448, 400, accumulation=2, kernels="fused")
    zero2 = plan_memory(config, Layout(dp=16, tp=8, zero_stage=2), accumulate)
    assert plan_memory(config, Layout(dp=16, tp=8, zero_stage=1), accumulate).accumulation == tp8.weights
    assert tp8.weights / 16 <= zero2.accumulation < tp8.weights / 16 * 1.01  # ZeRO-2 sums slices
    recomputed = plan_memory(config, Layout(dp=1, tp=8, sp=True), Workload(1, 64, 256, 448, 400, kernels="fused",
                                                                            recompute_every=1))
    kept = plan_memory(config, Layout(dp=1, tp=8, sp=True), work)
    assert recomputed.activations < kept.activations / 10
    bf16 = plan_memory(dit_config("30B", dtype="bf16"), Layout(dp=1, tp=8), work)
    assert bf16.weight_copies > 0 and bf16.activations < tp8.activations


def test_memory_sizes_parse_as_mindspore_writes_them():
    assert parse_memory_size("59GB") == 59 * 2 ** 30 and parse_memory_size("512MB") == 512 * 2 ** 20
    with pytest.raises(ValueError, match="env.max_device_memory must be a size such as 59GB"):
        parse_memory_size("59XB")


def test_train_refuses_a_run_that_does_not_fit_naming_what_to_change(tmp_path):
    data = write_cached_dataset(tmp_path / "data")
    with pytest.raises(MemoryError, match=r"needs .* MiB per device, more than env.max_device_memory = 64KB: "
                                          r"(raise|set) .*The plan:\n.*weights"):
        train.main(train_args(data, tmp_path / "out", 2, ["--env.max_device_memory", "64KB"]))
    assert not list((tmp_path / "out").glob("ckpt/step_*"))  # nothing trained
