"""The command line is installed as the `trade-exec` console script, and names itself so."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

from execution.cli.context import EXIT_PROBLEMS, EXIT_UNREACHABLE, EXIT_USAGE

ROOT = Path(__file__).resolve().parents[2]


def help_of(*command: str) -> str:
    done = subprocess.run(
        [*command, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_console_script_runs_the_command_lines_main() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, name = scripts["trade-exec"].partition(":")

    entry = getattr(importlib.import_module(module), name)

    assert entry is importlib.import_module("execution.cli").main


def test_the_console_script_names_itself_in_its_usage() -> None:
    started_as_script = "import sys; sys.argv[0] = '/venv/bin/trade-exec'; " + (
        "from execution.cli import main; main()"
    )

    assert "Usage: trade-exec " in help_of(sys.executable, "-c", started_as_script)


def test_python_dash_m_execution_still_names_itself_so() -> None:
    assert "Usage: python -m execution " in help_of(sys.executable, "-m", "execution")


def test_no_exit_code_of_ours_is_clicks_usage_error() -> None:
    assert EXIT_USAGE == 2
    assert EXIT_USAGE not in {EXIT_PROBLEMS, EXIT_UNREACHABLE}
