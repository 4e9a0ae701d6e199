"""The command line as the tests run it: in-process, on a module's emulator project."""

from __future__ import annotations

from collections.abc import Callable

from typer.testing import CliRunner, Result

from devtools.alpaca_sandbox import KEY_ID, SECRET_KEY
from execution.cli import app

WIDE = {"COLUMNS": "250"}
"""A terminal wide enough that no table folds an id."""


def emulator_cli(project: str, env: dict[str, str] | None = None) -> Callable[..., Result]:
    """`python -m execution --project PROJECT ARGS`, in-process, with `env` (default `WIDE`)."""

    def run(*args: str) -> Result:
        return CliRunner().invoke(app, ["--project", project, *args], env=env or WIDE)

    return run


def alpaca_cli(project: str, base_url: str) -> Callable[..., Result]:
    """`python -m execution --project PROJECT ARGS` with the function's broker settings pointing
    at the Alpaca sandbox at `base_url`, and nothing in flight to wait for."""
    env = {
        **WIDE,
        "BROKER": "alpaca",
        "AGENT_MODE": "LIVE",  # a loopback URL is not Alpaca's paper endpoint
        "APCA_API_KEY_ID": KEY_ID,
        "APCA_API_SECRET_KEY": SECRET_KEY,
        "APCA_API_BASE_URL": base_url,
        # Nothing is in flight here: keep the wait for broker calls in flight short.
        "SHARED_READ_MAX_AGE_SECONDS": "0",
        "BROKER_TIMEOUT_SECONDS": "0.5",
        "CLOCK_SKEW_SECONDS": "0",
    }
    return emulator_cli(project, env)
