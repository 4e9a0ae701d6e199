"""The progress line of every bounded command names its time limit and what happens at it.

`sweep`, `reconcile` and `kill-switch on --cancel-open` stop after `SWEEP_DEADLINE_SECONDS` and
report themselves incomplete; an operator watching one run long must be able to tell that it
will stop, when, and what to do then. Rich draws the progress line on a terminal only:
`TTY_COMPATIBLE=1` makes the runner's output one, so the line is in what the test reads.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from typer.testing import CliRunner, Result

from execution.cli import app

TERMINAL = {
    "COLUMNS": "250",
    "TTY_COMPATIBLE": "1",
    "TTY_INTERACTIVE": "1",
    "SWEEP_DEADLINE_SECONDS": "45",
    # Nothing is in flight here: no wait for broker calls before listing open orders.
    "SHARED_READ_MAX_AGE_SECONDS": "0",
    "CLOCK_SKEW_SECONDS": "0",
}
LIMIT = "time limit 45 s (SWEEP_DEADLINE_SECONDS)"
AT_IT = "at it the run stops and reports itself incomplete; run it again to finish"


@pytest.fixture(autouse=True)
def empty_project(reset_firestore: Callable[[], None]) -> None:
    """A sweep sees the whole project: start each test empty."""


@pytest.fixture
def cli(firestore_emulator_host: str, firestore_project: str) -> Callable[..., Result]:
    """Run `python -m execution --project <this module's project> ARGS` on a terminal."""

    def run(*args: str) -> Result:
        return CliRunner().invoke(app, ["--project", firestore_project, *args], env=TERMINAL)

    return run


@pytest.mark.parametrize(
    "command",
    [
        ("sweep",),
        ("reconcile",),
        ("kill-switch", "on", "--tenant", "tenant-limits", "--reason", "r", "--cancel-open"),
    ],
    ids=["sweep", "reconcile", "cancel-open"],
)
def test_a_bounded_command_names_its_limit_and_what_happens_at_it_while_it_runs(
    cli: Callable[..., Result], command: tuple[str, ...]
) -> None:
    result = cli(*command)

    assert result.exit_code == 0, result.output
    assert LIMIT in result.output
    assert AT_IT in result.output
