"""mg.isolated runs a benchmark case in a fresh process: its result comes back, a dead case ends with its name."""
import pytest
from isolated_targets import die, put_square

from mg.isolated import run_isolated


def test_returns_what_the_case_puts_on_its_queue():
    assert run_isolated(put_square, (7,), "square") == 49


def test_a_case_that_dies_without_a_result_names_itself_and_its_exit_code():
    with pytest.raises(SystemExit, match=r"the case tokens=8192 failed \(exit code 3\)"):
        run_isolated(die, (3,), "tokens=8192")
