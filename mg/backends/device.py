"""The choice itself: fused device kernels or the plain path, from the device MindSpore runs on."""
from contextlib import contextmanager

import mindspore as ms

FUSED_DEVICES = ("Ascend",)  # devices whose fused kernels (flash attention, rms_norm, conv3d...) are used
_forced = []  # a backend forced by `use_backend` (tests of the selection), innermost last


def fused_on(device_target):
    """Whether the fused kernels are used on `device_target` ("Ascend", "CPU", ...)."""
    return device_target in FUSED_DEVICES


@ms.constexpr
def fused():
    """Whether the operations in mg.backends use the fused kernels now: on Ascend, unless `use_backend` says
    otherwise. A constant of the compiled graph under ms.jit."""
    if _forced:
        return _forced[-1] == "fused"
    return fused_on(ms.get_context("device_target"))


@contextmanager
def use_backend(name):
    """Force "fused" or "plain" kernels inside the block (for tests and for checking the Ascend path's selection
    logic on CPU; graphs compiled inside keep the choice)."""
    if name not in ("fused", "plain"):
        raise ValueError(f"backend must be 'fused' or 'plain', got {name!r}")
    _forced.append(name)
    try:
        yield
    finally:
        _forced.pop()
