"""Shared test set-up: quiet MindSpore, PyNative on CPU, deterministic seeds."""
import mg  # noqa: F401  (sets GLOG_v before mindspore is imported)

import mindspore as ms
import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _pynative_cpu_and_seeds():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_device("CPU")
    ms.set_seed(0)
    np.random.seed(0)
    yield
