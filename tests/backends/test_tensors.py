"""The shape helpers of mg/backends/tensors.py: `permute` and `split_equal` match NumPy and their gradients route every
element back to where it came from; `expand` repeats like NumPy broadcasting, and so does `expand_summed_by_matmul`
for one axis, with the sum over it as its gradient; `narrow` slices one axis; in PyNative and under jit."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import ops

from mg.backends import expand, expand_summed_by_matmul, narrow, permute, split_equal

RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 4, 6, 6)).astype(np.float32)


def maybe_jit(fn, jit):
    return ms.jit(fn) if jit else fn


@pytest.mark.parametrize("jit", [False, True])
def test_permute_matches_numpy_and_its_gradient_is_the_inverse_permutation(jit):
    axes = (0, 2, 3, 1)
    weights = RNG.standard_normal(np.transpose(X, axes).shape).astype(np.float32)

    def loss(x):
        return (permute(x, axes) * ms.Tensor(weights)).sum()

    def forward(x):
        return permute(x, axes)

    np.testing.assert_array_equal(maybe_jit(forward, jit)(ms.Tensor(X)).asnumpy(), np.transpose(X, axes))
    grad = maybe_jit(ops.grad(loss), jit)(ms.Tensor(X)).asnumpy()
    np.testing.assert_array_equal(grad, np.transpose(weights, np.argsort(axes)))


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("parts, axis", [(3, -1), (2, 1), (3, 2)])
def test_split_equal_matches_numpy_and_its_gradient_reassembles_the_pieces(jit, parts, axis):
    expected = np.split(X, parts, axis=axis)
    weights = [RNG.standard_normal(piece.shape).astype(np.float32) for piece in expected]

    def loss(x):
        return sum((piece * ms.Tensor(w)).sum() for piece, w in zip(split_equal(x, parts, axis), weights))

    def forward(x):
        return split_equal(x, parts, axis)

    pieces = maybe_jit(forward, jit)(ms.Tensor(X))
    assert len(pieces) == parts
    for piece, want in zip(pieces, expected):
        np.testing.assert_array_equal(piece.asnumpy(), want)
    grad = maybe_jit(ops.grad(loss), jit)(ms.Tensor(X)).asnumpy()
    np.testing.assert_array_equal(grad, np.concatenate(weights, axis=axis))


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("small,shape", [((1, 1, 4), (2, 3, 4)), ((3, 1), (2, 3, 5)), ((4,), (6, 4)),
                                         ((2, 3, 4), (2, 3, 4))])
def test_expand_repeats_like_numpy_broadcasting(jit, small, shape):
    values = np.arange(np.prod(small), dtype=np.float32).reshape(small)

    def fn(t):
        return expand(t, shape)
    out = maybe_jit(fn, jit)(ms.Tensor(values)).asnumpy()
    np.testing.assert_array_equal(out, np.broadcast_to(values, shape))


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("small,shape", [((1, 3, 4), (2, 3, 4)), ((2, 3, 1), (2, 3, 5)), ((4,), (6, 4)),
                                         ((2, 1, 4), (2, 3, 4)), ((2, 3, 4), (2, 3, 4))])
def test_expand_summed_by_matmul_repeats_one_axis_and_its_gradient_sums_it(jit, small, shape):
    values = RNG.standard_normal(small).astype(np.float32)
    weights = RNG.standard_normal(shape).astype(np.float32)

    def forward(t):
        return expand_summed_by_matmul(t, shape)

    def loss(t):
        return (expand_summed_by_matmul(t, shape) * ms.Tensor(weights)).sum()

    np.testing.assert_array_equal(maybe_jit(forward, jit)(ms.Tensor(values)).asnumpy(), np.broadcast_to(values, shape))
    grad = maybe_jit(ops.grad(loss), jit)(ms.Tensor(values)).asnumpy()
    leading = len(shape) - len(small)
    summed = weights.sum(axis=tuple(range(leading)))
    summed = summed.sum(axis=tuple(i for i, n in enumerate(small) if n == 1 and summed.shape[i] != 1), keepdims=True)
    np.testing.assert_allclose(grad, summed, rtol=1e-5, atol=1e-5)


def test_expand_summed_by_matmul_refuses_two_repeated_axes():
    with pytest.raises(ValueError, match="repeats one axis"):
        expand_summed_by_matmul(ms.Tensor(np.ones((1, 3, 1), np.float32)), (2, 3, 4))


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("axis, start, stop", [(1, 0, 4), (1, 1, 3), (-1, 2, None), (0, 0, 1)])
def test_narrow_slices_one_axis(jit, axis, start, stop):
    def forward(x):
        return narrow(x, axis, start, stop)

    expected = X[(slice(None),) * (axis % X.ndim) + (slice(start, stop),)]
    np.testing.assert_array_equal(maybe_jit(forward, jit)(ms.Tensor(X)).asnumpy(), expected)
