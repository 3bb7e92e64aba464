"""The transformer's conditioning (Movie Gen Edit; image-to-video, continuation, inpainting): zero-initialised, so
a text-to-video checkpoint gives exactly its own output; the condition and the task reach the output and get
gradients; a text-to-video checkpoint loads into a conditioned model and nothing else is let through."""
import mindspore as ms
import numpy as np
import pytest

from mg.io import CheckpointError, save_checkpoint
from mg.models.dit import MovieGenDiT, dit_config, load_dit_weights, parameter_count
from mg.models.dit.config import TASK_TOKENS
from mg.training.dit_init import build_dit

BASE = dict(depth=2, dim=32, ffn_dim=48, num_heads=4, in_channels=4, text_encoders={"ul2": 12}, max_t=2, max_h=4,
            max_w=4)
CONDITIONED = dict(BASE, condition_channels=5, num_tasks=3)


def _random_weights(model, seed=0):
    """Random values for every parameter (zero-initialised ones too, so every path carries signal)."""
    rng = np.random.default_rng(seed)
    return {p.name: rng.normal(0, 0.3, p.shape).astype(np.float32) for p in model.trainable_params()}


def _inputs(seed=1):
    rng = np.random.default_rng(seed)
    x = ms.Tensor(rng.standard_normal((2, 4, 2, 4, 4)).astype(np.float32))
    t = ms.Tensor(np.array([0.3, 0.7], np.float32))
    text = (ms.Tensor(rng.standard_normal((2, 5, 12)).astype(np.float32)),)
    mask = np.ones((2, 5), np.float32)
    mask[1, 3:] = 0
    condition = ms.Tensor(rng.standard_normal((2, 5, 2, 4, 4)).astype(np.float32))
    return x, t, text, (ms.Tensor(mask),), condition


def _pair():
    """A trained-looking text-to-video model and the conditioned model started from its checkpoint."""
    t2v = MovieGenDiT(dit_config("tiny", **BASE))
    weights = _random_weights(t2v)
    load_dit_weights(t2v, weights)
    conditioned = MovieGenDiT(dit_config("tiny", **CONDITIONED))
    load_dit_weights(conditioned, weights, "t2v")
    return t2v, conditioned


def test_a_text_to_video_checkpoint_gives_exactly_its_output_whatever_the_condition():
    t2v, conditioned = _pair()
    x, t, text, mask, condition = _inputs()
    want = t2v(x, t, text, mask).asnumpy()
    np.testing.assert_array_equal(conditioned(x, t, text, mask).asnumpy(), want)
    np.testing.assert_array_equal(conditioned(x, t, text, mask, condition).asnumpy(), want)
    assert parameter_count(conditioned.config) == sum(p.size for p in conditioned.trainable_params())


def test_the_condition_and_the_task_reach_the_output_and_get_gradients():
    _, conditioned = _pair()
    x, t, text, mask, condition = _inputs()
    task = ms.Tensor(np.array([0, 2], np.int32))
    params = [p for p in conditioned.trainable_params() if p.name.startswith(("condition_embed", "task_embed"))]
    assert sorted(p.name for p in params) == ["condition_embed.proj.weight", "task_embed.tokens",
                                              "task_embed.vector"]

    def loss(condition, task):
        return (conditioned(x, t, text, mask, condition, task) ** 2).mean()

    grads = ms.value_and_grad(loss, None, params)(condition, task)[1]
    for param, grad in zip(params, grads):
        grad = grad.asnumpy()
        assert np.abs(grad).max() > 0, f"{param.name} gets no gradient"
        if param.name.startswith("task_embed"):  # only the rows of the tasks used
            assert np.abs(grad[1]).max() == 0 and np.abs(grad[0]).max() > 0 and np.abs(grad[2]).max() > 0
    plain = conditioned(x, t, text, mask).asnumpy()
    with_task = conditioned(x, t, text, mask, None, task).asnumpy()
    assert np.abs(with_task - plain).max() > 1e-4  # the task tokens join the cross-attention's context
    conditioned.condition_embed.proj.weight.copy_(ms.Tensor(
        np.full(conditioned.condition_embed.proj.weight.shape, 0.1, np.float32)))
    assert np.abs(conditioned(x, t, text, mask, condition).asnumpy() - plain).max() > 1e-4
    # a zero condition (nothing known) is no condition at all: the condition projection has no bias
    np.testing.assert_array_equal(conditioned(x, t, text, mask, condition * 0).asnumpy(), plain)


def test_each_sample_gets_its_own_task():
    _, conditioned = _pair()
    x, t, text, mask, _ = _inputs()
    both = conditioned(x, t, text, mask, None, ms.Tensor(np.array([1, 2], np.int32))).asnumpy()
    for row, task in ((0, 1), (1, 2)):
        alone = conditioned(x[row:row + 1], t[row:row + 1], (text[0][row:row + 1],), (mask[0][row:row + 1],), None,
                            ms.Tensor(np.array([task], np.int32))).asnumpy()
        np.testing.assert_allclose(both[row:row + 1], alone, rtol=1e-5, atol=1e-5)
    assert conditioned.task_embed.tokens.shape == (3, TASK_TOKENS, 32)


def test_a_conditioned_model_compiles_with_and_without_a_condition():
    _, conditioned = _pair()
    x, t, text, mask, condition = _inputs()
    eager = conditioned(x, t, text, mask, condition, ms.Tensor(np.array([0, 1], np.int32))).asnumpy()
    compiled = ms.jit(conditioned.construct)
    got = compiled(x, t, ms.mutable(text), ms.mutable(mask), condition, ms.Tensor(np.array([0, 1], np.int32)))
    np.testing.assert_allclose(got.asnumpy(), eager, rtol=1e-5, atol=1e-5)


def test_a_checkpoint_may_lack_only_whole_groups_of_the_conditioning(tmp_path):
    t2v, conditioned = _pair()
    weights = _random_weights(conditioned, seed=3)
    partial = {k: v for k, v in weights.items() if k != "task_embed.vector"}  # conditioned, but incomplete
    with pytest.raises(CheckpointError, match=r"does not fit MovieGenDiT: 1 missing \[task_embed.vector\]"):
        load_dit_weights(MovieGenDiT(dit_config("tiny", **CONDITIONED)), partial, "partial")
    wider = dict(weights, **{"condition_embed.proj.weight": np.zeros((32, 9, 1, 2, 2), np.float32)})
    with pytest.raises(CheckpointError, match=r"shape mismatch \[condition_embed.proj.weight"):
        load_dit_weights(MovieGenDiT(dit_config("tiny", **CONDITIONED)), wider, "wider")
    with pytest.raises(CheckpointError, match=r"unexpected \[condition_embed.proj.weight"):
        load_dit_weights(MovieGenDiT(dit_config("tiny", **BASE)), weights, "conditioned")
    # training starts a conditioned model from a text-to-video checkpoint the same way
    file = save_checkpoint(tmp_path / "t2v", {f"ema/{k}": v for k, v in _random_weights(t2v).items()}, {})
    started = build_dit(dit_config("tiny", **CONDITIONED), 0, pretrained=file)
    assert not started.condition_embed.proj.weight.asnumpy().any()
    x, t, text, mask, condition = _inputs()
    load_dit_weights(t2v, _random_weights(t2v))
    np.testing.assert_array_equal(started(x, t, text, mask, condition).asnumpy(), t2v(x, t, text, mask).asnumpy())
    # a conditioned model without tasks (image-to-video) is where an editing model starts: the task embeddings are
    # added at their initialisation, the condition weights kept
    no_tasks = {k: v for k, v in weights.items() if not k.startswith("task_embed")}
    file = save_checkpoint(tmp_path / "conditioned", {f"ema/{k}": v for k, v in no_tasks.items()}, {})
    editing = build_dit(dit_config("tiny", **CONDITIONED), 0, pretrained=file)
    np.testing.assert_array_equal(editing.condition_embed.proj.weight.asnumpy(),
                                  weights["condition_embed.proj.weight"])
    assert not editing.task_embed.vector.asnumpy().any()
    model = MovieGenDiT(dit_config("tiny", **CONDITIONED))
    load_dit_weights(model, no_tasks, "conditioned")
    np.testing.assert_array_equal(model.condition_embed.proj.weight.asnumpy(), weights["condition_embed.proj.weight"])
