from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn, ops

import mg.backends.mha as mha
from mg.backends import apply_recompute, use_backend
from mg.backends.recompute import Checkpointed
from mg.models.dit import (DiTConfig, MovieGenDiT, dit_config, expand_position_tables, load_dit, load_dit_weights,
                          parameter_count)
from mg.models.dit.config import SIZES
from mg.models.dit.embeddings import POSITION_INIT_STD, PatchEmbed3D
from mg.schedulers import FlowMatching

from dit.helpers import random_model, text_inputs, tiny_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("shape", [(1, 4, 1, 8, 8),      # image, square
                                   (2, 4, 1, 6, 10),     # image, wide
                                   (2, 4, 3, 10, 6),     # video, tall
                                   (1, 4, 4, 4, 12)])    # video, very wide, max length
def test_output_shape_matches_input_for_images_and_videos(shape):
    model = random_model()
    rng = np.random.default_rng(0)
    x = ms.Tensor(rng.standard_normal(shape).astype(np.float32))
    t = ms.Tensor(rng.random(shape[0]).astype(np.float32))
    embs, masks = text_inputs(shape[0], [[5, 2][:shape[0]], [1, 6][:shape[0]]], rng)
    out = model(x, t, embs, masks).asnumpy()
    assert out.shape == shape
    assert np.isfinite(out).all() and np.abs(out).max() > 0


@pytest.mark.parametrize("patch", [(1, 2, 2), (2, 1, 3)])
def test_patch_embedding_equals_the_strided_conv3d_in_token_order(patch):
    """The matmul form keeps Conv3d's weight layout and a (t, h, w) row-major token order, as unpatchify expects."""
    embed = PatchEmbed3D(3, 5, patch)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 4, 6)).astype(np.float32)
    conv = ops.conv3d(ms.Tensor(x), embed.proj.weight, stride=patch, pad_mode="valid") \
        + embed.proj.bias.reshape(1, -1, 1, 1, 1)
    want = conv.asnumpy().reshape(2, 5, -1).transpose(0, 2, 1)
    np.testing.assert_allclose(embed(ms.Tensor(x)).asnumpy(), want, rtol=1e-5, atol=1e-5)


def test_latent_not_divisible_by_patch_is_refused():
    model = random_model()
    rng = np.random.default_rng(0)
    embs, masks = text_inputs(1, [[3], [3]], rng)
    with pytest.raises(ValueError, match="not divisible by the patch size"):
        model(ms.Tensor(np.zeros((1, 4, 1, 7, 8), np.float32)), ms.Tensor(np.zeros(1, np.float32)), embs, masks)


def test_grid_larger_than_positional_tables_is_refused():
    model = random_model()
    rng = np.random.default_rng(0)
    embs, masks = text_inputs(1, [[3], [3]], rng)
    with pytest.raises(ValueError, match="exceeds the positional tables"):
        model(ms.Tensor(np.zeros((1, 4, 5, 4, 4), np.float32)), ms.Tensor(np.zeros(1, np.float32)), embs, masks)


def test_padded_text_tokens_do_not_change_the_output():
    model = random_model(seed=1)
    rng = np.random.default_rng(1)
    x = ms.Tensor(rng.standard_normal((2, 4, 2, 4, 4)).astype(np.float32))
    t = ms.Tensor(np.array([0.2, 0.9], np.float32))
    embs, masks = text_inputs(2, [[3, 5], [0, 2]], rng)  # sample 0 has no ByT5 tokens at all
    before = model(x, t, embs, masks).asnumpy()

    changed = []
    for emb, mask in zip(embs, masks):
        e = emb.asnumpy().copy()
        e[mask.asnumpy() == 0] = rng.standard_normal(e[mask.asnumpy() == 0].shape) * 10
        changed.append(ms.Tensor(e))
    after = model(x, t, tuple(changed), masks).asnumpy()
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6)

    # ...while changing a real token does change it (the test can fail).
    e = embs[0].asnumpy().copy()
    e[0, 0] += 1.0
    moved = model(x, t, (ms.Tensor(e), embs[1]), masks).asnumpy()
    assert np.abs(moved[0] - before[0]).max() > 1e-4


def test_fresh_model_outputs_zeros_then_every_parameter_learns():
    model = MovieGenDiT(tiny_config(max_t=2, max_h=2, max_w=3))  # tables exactly cover the grid below
    rng = np.random.default_rng(0)
    x1 = ms.Tensor(rng.standard_normal((2, 4, 2, 4, 6)).astype(np.float32))
    t = ms.Tensor(np.array([0.3, 0.6], np.float32))
    embs, masks = text_inputs(2, [[5, 3], [4, 6]], rng)
    assert np.abs(model(x1, t, embs, masks).asnumpy()).max() == 0.0

    gates = [b.modulation_table for b in model.blocks] + [model.t_modulation.weight, model.final.proj.weight]
    assert all(np.abs(g.asnumpy()).max() == 0.0 for g in gates)

    flow = FlowMatching()
    optimizer = nn.AdamWeightDecay(model.trainable_params(), learning_rate=1e-2, weight_decay=0.0)
    grad_fn = ms.value_and_grad(lambda *a: flow.loss(model, *a), None, optimizer.parameters)
    touched = {p.name: False for p in optimizer.parameters}
    for _ in range(4):
        x0 = ms.Tensor(flow.sample_noise(x1.shape, rng))
        _, grads = grad_fn(x1, x0, t, embs, masks)
        for p, g in zip(optimizer.parameters, grads):
            touched[p.name] |= bool(np.abs(g.asnumpy()).max() > 0)
        optimizer(grads)
    assert np.abs(model(x1, t, embs, masks).asnumpy()).max() > 0
    assert [name for name, ok in touched.items() if not ok] == []


def test_parameter_count_of_built_model_matches_formula():
    config = tiny_config()
    model = MovieGenDiT(config)
    assert sum(p.size for p in model.get_parameters()) == parameter_count(config)


@pytest.mark.slow
def test_1b_flavor_builds_with_the_counted_parameters():
    config = dit_config("1B")
    model = MovieGenDiT(config)
    assert sum(p.size for p in model.get_parameters()) == parameter_count(config)
    assert 0.9e9 < parameter_count(config) < 1.1e9


@pytest.mark.parametrize("flavor, expected", [("5B", 4.9e9), ("30B", 2.93e10)])
def test_large_flavor_counts_match_the_design(flavor, expected):
    assert abs(parameter_count(dit_config(flavor)) / expected - 1) < 0.03


def test_a_flavor_fills_the_sizes_left_unset_and_the_shipped_toy_is_the_toy_flavor():
    assert (DiTConfig(flavor="5B").depth, DiTConfig(flavor="5B").dim) == (32, 3072)
    assert DiTConfig(flavor="5B", depth=2).depth == 2 and DiTConfig(flavor="5B", depth=2).ffn_dim == 8192
    assert DiTConfig(depth=1, dim=8, ffn_dim=8, num_heads=2).dim == 8  # no flavor: every size given
    with pytest.raises(ValueError, match=r"a flavor .* or all of its sizes; missing \['ffn_dim', 'num_heads'\]"):
        DiTConfig(depth=1, dim=8)
    shipped = load_dit(ROOT / "checkpoints/toy/dit.safetensors").config
    toy = dit_config("toy")
    assert [getattr(shipped, k) for k in SIZES] == [getattr(toy, k) for k in SIZES]


def test_unknown_flavor_and_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="unknown transformer flavor"):
        dit_config("2B")
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        dit_config("tiny", dim=30, num_heads=4)
    with pytest.raises(ValueError, match="unknown DiTConfig fields"):
        dit_config("tiny", widht=3)


def test_growing_the_tables_extends_the_temporal_one_with_fresh_rows():
    params = {p.name: p.asnumpy() for p in random_model(max_t=1, max_h=3, max_w=3).get_parameters()}
    t_new = expand_position_tables(params, max_t=4, max_h=6, max_w=6)["pos_embed.table_t"]
    np.testing.assert_array_equal(t_new[0], params["pos_embed.table_t"][0])  # images keep their time row
    # new frames get fresh rows at the initial scale, not copies that would make them indistinguishable
    fresh = t_new[1:]
    assert 0.6 < fresh.std() / POSITION_INIT_STD < 1.4
    distances = [np.linalg.norm(a - b) for i, a in enumerate(t_new) for b in t_new[i + 1:]]
    assert min(distances) > 0.5 * np.sqrt(2 * t_new.shape[1]) * POSITION_INIT_STD
    np.testing.assert_array_equal(expand_position_tables(params, max_t=4, max_h=6, max_w=6)["pos_embed.table_t"],
                                  t_new)  # deterministic: every rank grows the same table
    with pytest.raises(ValueError, match="cannot shrink"):
        expand_position_tables(params, max_t=4, max_h=2, max_w=6)
    with pytest.raises(ValueError, match="spatial table growth must be one of"):
        expand_position_tables(params, max_t=4, max_h=6, max_w=6, spatial="stretch")


def stage_outputs(stage1, spatial_growth):
    """A stage-1 model and a larger stage-2 model grown from it, both on the same stage-1-sized image."""
    stage2 = MovieGenDiT(tiny_config(max_t=4, max_h=6, max_w=6))
    load_dit_weights(stage2, {p.name: p.asnumpy() for p in stage1.get_parameters()}, spatial_growth=spatial_growth)
    rng = np.random.default_rng(0)
    embs, masks = text_inputs(1, [[3], [2]], rng)
    image = ms.Tensor(rng.standard_normal((1, 4, 1, 6, 6)).astype(np.float32))  # a 3 x 3 patch grid
    t = ms.Tensor(np.array([0.5], np.float32))
    return stage1(image, t, embs, masks).asnumpy(), stage2(image, t, embs, masks).asnumpy(), stage2


def test_extending_the_tables_keeps_what_the_earlier_stage_learned():
    """At the same resolution (the paper's stage 2) a grown model reproduces the earlier stage exactly."""
    before, after, stage2 = stage_outputs(random_model(max_t=1, max_h=3, max_w=3), "extend")
    np.testing.assert_array_equal(after, before)
    h = {p.name: p.asnumpy() for p in stage2.get_parameters()}["pos_embed.table_h"]
    w = {p.name: p.asnumpy() for p in stage2.get_parameters()}["pos_embed.table_w"]
    assert np.abs(h[3:] - w[3:]).min() > 0  # the new rows of the two tables differ


def test_interpolating_the_tables_stretches_them_for_a_higher_resolution():
    stage1 = random_model(max_t=1, max_h=3, max_w=3)
    before, after, stage2 = stage_outputs(stage1, "interpolate")
    assert np.abs(after - before).max() > 1e-3  # the grid's positions moved: it now covers a third of the table
    h_old = {p.name: p.asnumpy() for p in stage1.get_parameters()}["pos_embed.table_h"]
    h_new = {p.name: p.asnumpy() for p in stage2.get_parameters()}["pos_embed.table_h"]
    np.testing.assert_allclose(h_new[[0, -1]], h_old[[0, -1]], rtol=1e-6)   # interpolation keeps the ends
    np.testing.assert_allclose(h_new[1], h_old[0] * 0.6 + h_old[1] * 0.4, rtol=1e-5)  # row 1 sits at 0.4


def recompute_gradients(model, jit):
    rng = np.random.default_rng(0)
    x1, x0 = (ms.Tensor(rng.standard_normal((1, 4, 2, 4, 4)).astype(np.float32)) for _ in range(2))
    embs, masks = text_inputs(1, [[3], [2]], rng)
    flow = FlowMatching()

    def loss_fn(*args):
        return flow.loss(model, *args)
    grad = ms.value_and_grad(loss_fn, None, model.trainable_params())
    loss, grads = (ms.jit(grad) if jit else grad)(x1, x0, ms.Tensor(np.array([0.4], np.float32)), embs, masks)
    return float(loss.asnumpy()), {p.name: g.asnumpy() for p, g in zip(model.trainable_params(), grads)}


@pytest.mark.parametrize("jit", [False, True])
def test_recompute_gives_the_same_loss_and_gradients(jit):
    """PyNative: MindSpore's Cell.recompute; compiled on CPU: the shared block checkpoint."""
    plain = recompute_gradients(random_model(seed=3), jit)
    recomputed = recompute_gradients(apply_recompute(random_model(seed=3), 1, compiled=jit), jit)
    assert plain[0] == pytest.approx(recomputed[0], rel=1e-6)
    assert plain[1].keys() == recomputed[1].keys()
    for name, grad in plain[1].items():
        np.testing.assert_allclose(recomputed[1][name], grad, rtol=1e-4, atol=1e-6, err_msg=name)
    assert all(np.abs(g).max() > 0 for g in plain[1].values())


def test_a_recomputed_block_reuses_its_self_attention_result(monkeypatch):
    """The compiled backward recomputes each block from its inputs but takes the self-attention's result from the
    first forward: with that kept result replaced by zeros, the gradient of the attention's output projection
    (which multiplies it) vanishes, while the loss is unchanged."""
    def zeros_instead(self, q, k, v, saved):
        return saved * 0
    monkeypatch.setattr(mha._AttentionReplay, "construct", zeros_instead)
    plain = recompute_gradients(random_model(seed=3), jit=True)
    recomputed = recompute_gradients(apply_recompute(random_model(seed=3), 1, compiled=True), jit=True)
    assert plain[0] == pytest.approx(recomputed[0], rel=1e-6)
    for i in range(2):
        name = f"blocks.{i}.attn.proj.weight"
        assert np.abs(plain[1][name]).max() > 1e-3 and np.abs(recomputed[1][name]).max() == 0.0, name


def test_recompute_is_mindspores_pass_on_ascend_and_in_pynative_and_the_block_checkpoint_compiled_on_cpu():
    names = [p.name for p in random_model(seed=3).trainable_params()]
    model = apply_recompute(random_model(seed=3), 1, compiled=True)
    assert all(isinstance(block, Checkpointed) for block in model.blocks)
    # one checkpoint cell for all blocks: one per block kept ~90 MiB more compiled graph per block
    assert len({id(block.checkpoint) for block in model.blocks}) == 1
    assert [p.name for p in model.trainable_params()] == names  # the checkpoint adds no parameters or prefixes
    for compiled, backend in ((True, "fused"), (False, "plain")):
        with use_backend(backend):
            plain = apply_recompute(random_model(seed=3), 2, compiled=compiled)
        assert [block._recompute_cell is not None for block in plain.blocks] == [True, False]
        assert not any(isinstance(block, Checkpointed) for block in plain.blocks)
    with pytest.raises(ValueError, match="recompute_every = 2: compiled on CPU"):
        apply_recompute(random_model(seed=3), 2, compiled=True)
