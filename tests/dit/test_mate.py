"""LinGen's MATE block: the Rotary Major Scan orders, review tokens, TEmporal Swin Attention against a NumPy
reference, the model with MATE in every block (compiled equals eager, every parameter learns, the MA-branch is
bidirectional, its parameter count is counted, recompute gives the same gradients) and its configuration errors."""
import mindspore as ms
import numpy as np
import pytest

from mg.backends import apply_recompute
from mg.models.dit import MovieGenDiT, load_dit, save_dit
from mg.models.dit.config import parameter_count
from mg.models.dit.mate import (SCAN_ORDERS, BidirectionalMamba2, TemporalSwinAttention, from_scan_order,
                                review_tokens, to_scan_order)
from dit.helpers import random_model, text_inputs, tiny_config
from dit.test_dit_model import recompute_gradients

MATE = dict(attention="mate", mate_head_dim=8, mate_state_dim=6, mate_window=(2, 2, 2), depth=4)


def grid_tokens(grid, dim=3, seed=0):
    return np.random.default_rng(seed).standard_normal((2, *grid, dim)).astype(np.float32)


def test_each_scan_order_flattens_the_grid_with_its_innermost_axis_adjacent_and_inverts():
    grid = (3, 4, 5)
    x = grid_tokens(grid)
    coords = np.stack(np.meshgrid(*[np.arange(g) for g in grid], indexing="ij"), -1).astype(np.float32)
    innermost = set()
    for order in SCAN_ORDERS:
        scanned = to_scan_order(ms.Tensor(coords[None]), order).asnumpy()[0]   # (N, 3) coordinates in scan order
        np.testing.assert_array_equal(scanned, np.transpose(coords, (*order, 3)).reshape(-1, 3))
        steps = np.abs(np.diff(scanned, axis=0)).sum(-1)
        inner = order[-1]
        # consecutive tokens of the scan are neighbours along the innermost axis, except where that axis wraps
        assert (steps[np.arange(len(steps)) % grid[inner] != grid[inner] - 1] == 1).all()
        innermost.add(inner)
        back = from_scan_order(to_scan_order(ms.Tensor(x), order), grid, order).asnumpy()
        np.testing.assert_array_equal(back, x)
    assert innermost == {0, 1, 2}  # every axis is the scan's innermost in some layer


def test_the_scan_order_turns_with_the_layer():
    model = MovieGenDiT(tiny_config(**dict(MATE, depth=5)))
    assert [block.attn.order for block in model.blocks] == [SCAN_ORDERS[i % 4] for i in range(5)]
    assert [block.attn.tesa.shifted for block in model.blocks] == [False, True, False, True, False]


def test_review_tokens_average_each_frame_over_tiles():
    x = grid_tokens((2, 4, 6))
    out = review_tokens(ms.Tensor(x), 2).asnumpy()
    np.testing.assert_allclose(out, x.reshape(2, 2, 2, 2, 3, 2, 3).mean((3, 5)).reshape(2, -1, 3), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="mate_review_stride=4 must divide"):
        review_tokens(ms.Tensor(x), 4)


def numpy_window_attention(x, grid, window, shifted, qkv, proj, heads):
    """Attention in which token i sees token j iff both fall in the same window of the (shifted) window grid."""
    window = [min(w, g) for w, g in zip(window, grid)]
    front = [w // 2 if shifted and w < g else 0 for w, g in zip(window, grid)]
    coords = np.stack(np.meshgrid(*[np.arange(g) for g in grid], indexing="ij"), -1).reshape(-1, 3)
    cell = (coords + front) // window
    same = (cell[:, None] == cell[None]).all(-1)
    q, k, v = np.split(x @ qkv.T, 3, -1)
    dh = x.shape[-1] // heads
    out = np.zeros_like(q)
    for h in range(heads):
        part = slice(h * dh, (h + 1) * dh)
        scores = np.where(same, q[..., part] @ k[..., part].transpose(0, 2, 1) / np.sqrt(dh), -np.inf)
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        out[..., part] = weights / weights.sum(-1, keepdims=True) @ v[..., part]
    return out @ proj.T


@pytest.mark.parametrize("grid, window, shifted", [((3, 4, 6), (2, 2, 2), False), ((3, 4, 6), (2, 2, 2), True),
                                                   ((5, 4, 4), (8, 2, 3), True), ((1, 4, 4), (8, 2, 2), True)])
def test_temporal_swin_attention_attends_within_its_windows(grid, window, shifted):
    layer = TemporalSwinAttention(16, 2, window, shifted)
    x = grid_tokens(grid, 16).reshape(2, -1, 16)
    out = layer.apply(ms.Tensor(x), grid, *layer.weights()).asnumpy()
    expected = numpy_window_attention(x, grid, window, shifted, layer.attn.qkv.weight.asnumpy(),
                                      layer.attn.proj.weight.asnumpy(), 2)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def model_inputs(shape=(2, 4, 3, 8, 12), seed=0):
    rng = np.random.default_rng(seed)
    x = ms.Tensor(rng.standard_normal(shape).astype(np.float32))
    embs, masks = text_inputs(shape[0], [[3, 5], [2, 6]], rng)
    return x, ms.Tensor(np.array([0.3, 0.8], np.float32)[:shape[0]]), embs, masks


def test_mate_model_compiles_to_the_eager_result_and_every_parameter_learns():
    model = random_model(seed=1, **MATE, mate_review_stride=2, max_w=6)
    x, t, embs, masks = model_inputs()
    eager = model(x, t, embs, masks).asnumpy()
    np.testing.assert_allclose(ms.jit(model.construct)(x, t, embs, masks).asnumpy(), eager, rtol=1e-4, atol=1e-5)
    grads = ms.grad(lambda x: model(x, t, embs, masks).sum(), None, model.trainable_params())(x)
    silent = [p.name for p, g in zip(model.trainable_params(), grads) if not np.abs(g.asnumpy()).max() > 0]
    assert not silent
    assert sum(int(np.prod(p.shape)) for p in model.get_parameters()) == parameter_count(model.config)


def test_a_saved_mate_model_loads_as_mate_with_the_same_output(tmp_path):
    model = random_model(seed=4, **MATE, mate_review_stride=2, max_w=6)
    save_dit(model, tmp_path / "dit")
    loaded = load_dit(tmp_path / "dit")
    assert loaded.config == model.config and loaded.config.attention == "mate"
    x, t, embs, masks = model_inputs()
    np.testing.assert_array_equal(loaded(x, t, embs, masks).asnumpy(), model(x, t, embs, masks).asnumpy())


def test_the_ma_branch_reads_the_sequence_in_both_directions():
    """With one layer, no windows across tokens (window 1x1x1) and the scan in the grid's order, the first token's
    output depends on the last token and the last's on the first: the scan runs both ways."""
    model = random_model(seed=2, **dict(MATE, depth=1, mate_window=(1, 1, 1)), max_w=6)
    x, t, embs, masks = model_inputs((1, 4, 2, 4, 4))
    grads = ms.grad(lambda x: model(x, t, embs, masks)[..., 0, :2, :2].sum())(x).asnumpy()
    assert np.abs(grads[..., 1, 2:, 2:]).max() > 1e-6   # the first patch's output sees the last frame's last patch
    grads = ms.grad(lambda x: model(x, t, embs, masks)[..., 1, 2:, 2:].sum())(x).asnumpy()
    assert np.abs(grads[..., 0, :2, :2]).max() > 1e-6


def test_the_backward_direction_is_the_forward_one_run_from_the_end():
    """With the backward direction's parameters set to the forward one's, reversing the tokens and the review tokens
    reverses the MA-branch's output: the backward direction reads the review tokens first, then the tokens from the
    last to the first (37 tokens: the scan pads its last chunk)."""
    dim, state, heads = 16, 4, 2
    mamba = BidirectionalMamba2(dim, dim, 8, state)
    rng = np.random.default_rng(5)
    weights = [rng.standard_normal(w.shape).astype(np.float32) * 0.3 for w in mamba.weights()]
    in_proj = weights[0]
    forward_rows = slice(2 * dim, 2 * dim + 2 * state + heads)
    in_proj[2 * dim + 2 * state + heads:] = in_proj[forward_rows]
    for w in weights[1:6]:  # convolution, its bias, dt bias, decay, skip: (2, ...) per direction
        w[1] = w[0]
    x, review = rng.standard_normal((2, 37, dim)).astype(np.float32), rng.standard_normal((2, 5, dim)).astype(np.float32)
    weights = [ms.Tensor(w) for w in weights]
    out = mamba.apply(ms.Tensor(x), ms.Tensor(review), *weights).asnumpy()
    mirrored = mamba.apply(ms.Tensor(x[:, ::-1].copy()), ms.Tensor(review[:, ::-1].copy()), *weights).asnumpy()
    np.testing.assert_allclose(mirrored[:, ::-1], out, rtol=1e-4, atol=1e-5)
    assert not np.allclose(out, out[:, ::-1], atol=1e-3)  # the output itself is not symmetric


@pytest.mark.parametrize("jit", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_recompute_of_mate_blocks_gives_the_same_loss_and_gradients(jit):
    two = dict(MATE, depth=2)
    plain = recompute_gradients(random_model(seed=3, **two), jit)
    model = apply_recompute(random_model(seed=3, **two), 1, compiled=jit)
    if jit:  # blocks that scan in different orders get their own checkpoint cells
        assert len({id(block.checkpoint) for block in model.blocks}) == 2
    recomputed = recompute_gradients(model, jit)
    assert plain[0] == pytest.approx(recomputed[0], rel=1e-5)
    for name, grad in plain[1].items():
        np.testing.assert_allclose(recomputed[1][name], grad, rtol=1e-4, atol=1e-6, err_msg=name)


def test_bad_mate_settings_are_refused():
    with pytest.raises(ValueError, match="model.attention must be one of"):
        tiny_config(attention="linear")
    with pytest.raises(ValueError, match="mate_head_dim=12 must divide dim=32"):
        tiny_config(attention="mate", mate_head_dim=12)
    with pytest.raises(ValueError, match="mate_window must be 3 positive sizes"):
        tiny_config(attention="mate", mate_head_dim=8, mate_window=(2, 2))
    with pytest.raises(ValueError, match="mate_step_range must be"):
        tiny_config(attention="mate", mate_head_dim=8, mate_step_range=(0.1, 0.01))


@pytest.mark.parametrize("step_range", [(1e-3, 1e-1), (0.02, 0.06)])
def test_the_initial_steps_span_the_configured_range_over_the_heads(step_range):
    """softplus(dt bias) at initialisation is the step range log-spaced over the heads, in both directions."""
    mamba = BidirectionalMamba2(32, 32, 8, 4, step_range)
    steps = np.log1p(np.exp(mamba.dt_bias.asnumpy()))
    np.testing.assert_allclose(steps, np.tile(np.geomspace(*step_range, 4), (2, 1)), rtol=1e-5)
