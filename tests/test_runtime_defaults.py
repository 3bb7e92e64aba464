"""`import mg` sets MindSpore's environment defaults: quiet logging, and on a CPU host dispatch on the caller's thread
(MindSpore's dispatch thread, spin-waited on, takes a core from the kernels); the user's own values win."""
import os
import subprocess
import sys

import pytest

CHECKED = ("GLOG_v", "MS_DEV_HOST_BLOCKING_RUN", "ASCEND_HOME_PATH")


def environment_after_import(**overrides):
    env = {k: v for k, v in os.environ.items() if k not in CHECKED}
    env.update(overrides)
    code = "import mg, os; print(os.environ.get('GLOG_v'), os.environ.get('MS_DEV_HOST_BLOCKING_RUN'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    return tuple(None if value == "None" else value for value in out.split())


@pytest.mark.parametrize("overrides, expected", [
    ({}, ("3", "1")),                                                   # a CPU host: both defaults
    ({"ASCEND_HOME_PATH": "/usr/local/Ascend/ascend-toolkit/latest"}, ("3", None)),  # Ascend keeps async dispatch
    ({"MS_DEV_HOST_BLOCKING_RUN": "0", "GLOG_v": "1"}, ("1", "0")),     # the user's values are kept
])
def test_import_sets_mindspore_defaults_unless_the_user_did(overrides, expected):
    assert environment_after_import(**overrides) == expected
