"""Deferred, sharded initialisation: a model is built without its weights (`mindspore.nn.utils.no_init_parameters`),
then each rank materialises only the pieces it keeps.

`seed_initializers` makes every deferred parameter's initial value a function of (seed, parameter name) alone, so
a rank draws exactly the whole value a single process would, whatever the order it materialises in. `parallelize`
gives the parameters it slices a `PieceOf` initializer: the whole value drawn, this rank's piece kept, the rest
dropped. `materialize` then runs them one parameter at a time, so the peak is this rank's pieces plus one whole
parameter.
"""
from __future__ import annotations

import ctypes
import zlib

import numpy as np
from mindspore import Parameter
from mindspore.common.initializer import Initializer, initializer


def name_seed(seed: int, name: str) -> list[int]:
    """NumPy seed material of one parameter: the run's seed and a hash of the parameter's single-process name."""
    return [int(seed) % 2 ** 32, zlib.crc32(name.encode())]


class Seeded(Initializer):
    """`inner` (a MindSpore initializer drawing from NumPy's global RNG) run with that RNG seeded by `name_seed`;
    the global RNG state is restored afterwards."""

    def __init__(self, inner, seed, name):
        super().__init__()
        self.inner, self.key = inner, name_seed(seed, name)

    def _initialize(self, arr):
        state = np.random.get_state()
        np.random.seed(self.key)
        try:
            self.inner(arr)
        finally:
            np.random.set_state(state)


class PieceOf(Initializer):
    """This rank's piece of a parameter: the whole value (`whole`: an initializer filling an array of `full_shape`,
    or the array itself) cut by `cut`."""

    def __init__(self, whole, full_shape, cut):
        super().__init__()
        self.whole, self.full_shape, self.cut = whole, tuple(full_shape), cut

    def _initialize(self, arr):
        if isinstance(self.whole, np.ndarray):
            full = self.whole
        else:
            full = np.zeros(self.full_shape, arr.dtype)
            self.whole(full)
        arr[...] = self.cut(full).reshape(arr.shape)


def piece_parameter(source: Parameter, cut, shape, name: str) -> Parameter:
    """A Parameter of `shape` holding `cut(whole value of source)`: deferred if `source` is (call under
    no_init_parameters to keep it so), else computed now from the source's data."""
    whole = source.init_mode.init if source.has_init else source.asnumpy()
    return Parameter(initializer(PieceOf(whole, source.shape, cut), tuple(shape), source.dtype), name=name)


def is_deferred(model) -> bool:
    return any(p.has_init for p in model.get_parameters())


def seed_initializers(model, seed: int) -> None:
    """Make the initial value of every deferred parameter of `model` depend only on `seed` and its name."""
    for param in model.get_parameters():
        if param.has_init:
            param.set_data(initializer(Seeded(param.init_mode.init, seed, param.name), param.shape, param.dtype))


def _return_large_blocks_at_once() -> None:
    """Make glibc map every block of 1 MiB or more on its own, so a whole value is returned to the system when
    freed. By default glibc raises this threshold to the largest block freed so far; the next whole values then come
    from its heaps, where freed blocks stay resident, and a rank's memory could grow towards the whole model."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return
    libc.mallopt(_M_MMAP_THRESHOLD, 1 << 20)


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def materialize(model) -> None:
    """Compute every deferred parameter of `model`, one at a time."""
    _return_large_blocks_at_once()
    for param in model.get_parameters():
        if param.has_init:
            param.init_data()
