"""Shared test set-up: quiet MindSpore, PyNative on CPU, deterministic seeds; scripts importable as modules."""
import importlib.util
from pathlib import Path

import mg  # noqa: F401  (sets GLOG_v before mindspore is imported)

import mindspore as ms
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def load_script():
    """load_script("tools/eval_toy.py"): a repository script (not a package module) imported as a module."""
    def load(relative_path):
        path = ROOT / relative_path
        spec = importlib.util.spec_from_file_location(f"script_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load


@pytest.fixture(autouse=True)
def _pynative_cpu_and_seeds():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_device("CPU")
    ms.set_seed(0)
    np.random.seed(0)
    yield
