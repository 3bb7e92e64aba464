"""The package's layers import only downward (io < backends < models < schedulers, data, optim < parallel < training
< pipelines), checked by import-linter against the contracts in .importlinter (docs/architecture.md)."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def lint_imports(config):
    """import-linter in its own process (its CLI reconfigures logging, which would silence this process's loggers)."""
    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filenames=({str(config)!r},), no_cache=True, no_logo=True))")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)


def test_import_contracts_are_kept():
    result = lint_imports(ROOT / ".importlinter")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_contract_is_reported(tmp_path):
    """The check can fail: a contract that the package breaks (models would sit above training) is refused."""
    config = tmp_path / "inverted.ini"
    config.write_text("[importlinter]\nroot_package = mg\n\n[importlinter:contract:inverted]\nname = inverted\n"
                      "type = layers\nlayers =\n    mg.models\n    mg.training\n")
    result = lint_imports(config)
    assert result.returncode == 1 and "mg.training is not allowed to import mg.models" in result.stdout
