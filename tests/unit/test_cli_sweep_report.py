"""The sweep command's report names the time limit an incomplete sweep stopped at."""

from __future__ import annotations

import pytest

from execution.cli.sweep import _print_report
from execution.sweeper import SweepReport


def test_an_incomplete_sweep_says_it_stopped_at_its_limit_and_to_run_it_again(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")

    _print_report(SweepReport(scanned=200, complete=False), limit=45.0)

    assert "no (stopped at its 45 s limit; run again)" in capsys.readouterr().out
