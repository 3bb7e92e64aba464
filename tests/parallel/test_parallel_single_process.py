"""Single-process parts of mg.parallel: rank arithmetic, weight slicing, the 1 x 1 x 1 layout, data draws, errors."""
import mindspore as ms
import numpy as np
import pytest

from mg.models.dit import MovieGenDiT, dit_config
from mg.parallel.groups import ParallelGroups, init_parallel, layout_ranks
from mg.backends import FROM_FEATURE_MAJOR, TO_FEATURE_MAJOR
from mg.models.dit.layers import Linear
from mg.parallel.layers import ParallelLinear, shard_flat, shard_tp, unshard_tp
from mg.parallel.parallelize import parallelize
from mg.parallel.zero import ParallelAdamW
from mg.schedulers import FlowMatching
from mg.io import state_dict
from mg.optim import build_adamw, get_lr, set_lr


def tiny_model(seed=0):
    model = MovieGenDiT(dit_config("tiny", depth=2, dim=32, ffn_dim=48, num_heads=4, in_channels=4,
                                   text_encoders={"ul2": 12}, max_t=2, max_h=4, max_w=4))
    rng = np.random.default_rng(seed)
    for p in model.trainable_params():
        p.set_data(ms.Tensor(rng.normal(0, 0.2, p.shape).astype(np.float32)))
    return model


def inputs(seed=1):
    rng = np.random.default_rng(seed)
    x1 = ms.Tensor(rng.standard_normal((2, 4, 2, 4, 4)).astype(np.float32))
    x0 = ms.Tensor(rng.standard_normal((2, 4, 2, 4, 4)).astype(np.float32))
    t = ms.Tensor(np.array([0.3, 0.8], np.float32))
    return x1, x0, t, (ms.Tensor(rng.standard_normal((2, 5, 12)).astype(np.float32)),), \
        (ms.Tensor(np.ones((2, 5), np.float32)),)


def test_layout_ranks_put_tp_innermost():
    # rank 5 of dp=2 x cp=2 x tp=2 is (dp 1, cp 0, tp 1): rank = (dp * cp + c) * tp + t
    groups = layout_ranks(dp=2, cp=2, tp=2, rank=5)
    assert groups == {"dp": [1, 5], "cp": [5, 7], "tp": [4, 5], "dp_cp": [1, 3, 5, 7], "seq": [4, 5, 6, 7],
                      "world": list(range(8))}


def test_column_shard_takes_each_fused_part_separately():
    full = np.arange(12 * 2).reshape(12, 2)  # 3 parts (q, k, v) of 4 rows
    q, k, v = full[0:4], full[4:8], full[8:12]
    expected_rank1 = np.concatenate([q[2:4], k[2:4], v[2:4]])
    np.testing.assert_array_equal(shard_tp(full, "column", 3, 1, 2), expected_rank1)
    pieces = [shard_tp(full, "column", 3, r, 2) for r in range(2)]
    np.testing.assert_array_equal(unshard_tp(pieces, "column", 3), full)


def test_row_shard_splits_input_features():
    full = np.arange(4 * 6).reshape(4, 6)
    np.testing.assert_array_equal(shard_tp(full, "row", 1, 2, 3), full[:, 4:6])
    np.testing.assert_array_equal(unshard_tp([shard_tp(full, "row", 1, r, 3) for r in range(3)], "row", 1), full)


def test_flat_shards_are_zero_padded():
    a = np.arange(1, 6, dtype=np.float32)
    np.testing.assert_array_equal(shard_flat(a, 0, 2), [1, 2, 3])
    np.testing.assert_array_equal(shard_flat(a, 1, 2), [4, 5, 0])


def test_single_process_layout_is_the_plain_model_and_adamw():
    ref, model = tiny_model(), tiny_model()
    x1, x0, t, embs, masks = inputs()
    flow = FlowMatching()
    want = ref(flow.interpolate(x0, x1, t), t, embs, masks).asnumpy()
    plan = parallelize(model, init_parallel(1, 1, 1), sp=True, zero_stage=3)
    assert [p.name for p in model.trainable_params()] == [p.name for p in ref.trainable_params()]
    assert all(info.full_shape == info.local_shape for info in plan.params.values())
    np.testing.assert_array_equal(model(flow.interpolate(x0, x1, t), t, embs, masks).asnumpy(), want)

    adamw = build_adamw(ref.trainable_params(), lr=1e-2, weight_decay=0.1)
    parallel = ParallelAdamW(model, lr=1e-2, weight_decay=0.1)
    for net, opt in ((ref, adamw), (model, parallel)):
        _, grads = ms.value_and_grad(lambda *a, net=net: flow.loss(net, *a), None, opt.parameters)(
            x1, x0, t, embs, masks)
        opt(grads)
    got, expected = state_dict(model), state_dict(ref)
    assert max(float(np.abs(got[k] - expected[k]).max()) for k in expected) < 1e-6
    set_lr(parallel, 5e-3)  # the training loop's learning-rate policy drives it like AdamW
    assert get_lr(parallel) == pytest.approx(5e-3)


def test_bad_layouts_are_refused_with_the_option_named():
    with pytest.raises(ValueError, match="msrun --worker_num"):
        init_parallel(dp=2)
    with pytest.raises(ValueError, match="parallel.tp must be a positive integer"):
        init_parallel(tp=0)
    with pytest.raises(ValueError, match="zero_stage must be one of"):
        parallelize(tiny_model(), init_parallel(1, 1, 1), zero_stage=4)
    three = ParallelGroups(dp=1, cp=1, tp=3, rank=0, comms={})
    with pytest.raises(ValueError, match=r"tp=3 must divide the model's num_heads \(4\)"):
        parallelize(tiny_model(), three)
    mate = MovieGenDiT(dit_config("tiny", depth=1, dim=32, ffn_dim=48, num_heads=4, attention="mate", mate_head_dim=8))
    for groups, sp in ((ParallelGroups(dp=1, cp=1, tp=2, rank=0, comms={}), False),
                       (ParallelGroups(dp=1, cp=2, tp=1, rank=0, comms={}), False), (init_parallel(1, 1, 1), True)):
        with pytest.raises(ValueError, match="'mate' runs under data parallelism and ZeRO only"):
            parallelize(mate, groups, sp=sp)


def test_parallel_linears_refuse_a_layout_their_collectives_cannot_take():
    """A column layer's collective acts on its input rows and a row layer's on its output rows."""
    class TwoRanks:  # constructing the collectives needs only the group's size and index
        size, index = 2, 0
    x = ms.Tensor(np.ones((1, 4, 8), np.float32))
    column = ParallelLinear(Linear(8, 8, bias=False), "column", tp_comm=TwoRanks())
    with pytest.raises(ValueError, match="column-parallel linear cannot take layout 'from_feature_major'"):
        column.apply(x, column.weight, layout=FROM_FEATURE_MAJOR)
    row = ParallelLinear(Linear(8, 8, bias=False), "row", tp_comm=TwoRanks())
    with pytest.raises(ValueError, match="row-parallel linear cannot take layout 'to_feature_major'"):
        row.apply(x, row.weight, layout=TO_FEATURE_MAJOR)
