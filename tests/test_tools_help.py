"""Every command-line tool answers --help with its description and options (jsonargparse reads the docstrings)."""
import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = sorted(ROOT.glob("tools/*.py")) + [ROOT / "train.py", ROOT / "inference.py"]


@pytest.mark.parametrize("tool", TOOLS, ids=lambda p: p.name)
def test_help_describes_the_tool(tool, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [str(tool), "--help"])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(tool), run_name="__main__")
    out = capsys.readouterr().out
    assert stop.value.code == 0, out
    assert out.startswith("usage:") and "<function" not in out and "--help" in out
