"""Movie Gen-style text-to-video generation in MindSpore.

Importing the package sets two MindSpore environment defaults (a value the user exported wins), so it must run
before MindSpore executes anything (importing mindspore first is fine):

- GLOG_v=3: MindSpore's C++ logging turned down, so scripts and `python -c "import mg"` stay quiet.
- MS_DEV_HOST_BLOCKING_RUN=1 off Ascend: by default MindSpore hands every compiled graph and eager op to a dispatch
  thread and the caller spin-waits for it; on a CPU the spinning caller takes a core away from the kernels (on two
  cores the toy train step took 0.13 s instead of 0.03 s, and varied 10x from step to step; docs/performance.md).
  With it, the caller runs them itself. On Ascend (where the toolkit's set_env.sh exports ASCEND_HOME_PATH) the host
  dispatches ahead of the device, so the asynchronous default stays.
"""
import os

os.environ.setdefault("GLOG_v", "3")
if "ASCEND_HOME_PATH" not in os.environ:
    os.environ.setdefault("MS_DEV_HOST_BLOCKING_RUN", "1")

__version__ = "0.1.0"
