"""Movie Gen-style text-to-video generation in MindSpore.

Importing the package turns MindSpore's C++ logging down (GLOG_v=3) unless the user set it, so scripts and
`python -c "import mg"` stay quiet. It must run before mindspore is imported anywhere.
"""
import os

os.environ.setdefault("GLOG_v", "3")

__version__ = "0.1.0"
