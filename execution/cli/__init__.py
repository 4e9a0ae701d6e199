"""The operator's command line, `python -m execution`: publish, inspect, sweep and halt.

Typer and Rich are operator tooling (requirements-dev.txt): only `execution/__main__.py` imports
this package, never `main.py` or the engine, so the function's cold start does not pay for them.
Commands read their clients from the `CliContext` in `ctx.obj`, made by the callback below from
the environment (`GOOGLE_CLOUD_PROJECT`, `FIRESTORE_EMULATOR_HOST`, `PUBSUB_EMULATOR_HOST`,
`INTENT_TOPIC`, ...); a test can hand in its own with `CliRunner().invoke(app, args, obj=...)`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Annotated

import typer

from execution.cli import kill_switch
from execution.cli.context import CliContext
from execution.cli.dead_letters import dead_letters
from execution.cli.intent import intent
from execution.cli.publish import publish
from execution.cli.reconcile import reconcile
from execution.cli.reservations import reservations
from execution.cli.status import status
from execution.cli.sweep import sweep
from execution.telemetry import JsonFormatter

app = typer.Typer(
    name="execution",
    help="Operate the trade-execution service: publish intents, inspect reservations, sweep, halt.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold credentials
)


@app.callback()
def root(
    ctx: typer.Context,
    project: Annotated[
        str | None,
        typer.Option(
            help="Google Cloud project (default: GOOGLE_CLOUD_PROJECT; demo-execution on the "
            "emulators).",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            min=0.1,
            help="Seconds each store or topic call may take (default: FIRESTORE_TIMEOUT_SECONDS, "
            "10).",
            show_default=False,
        ),
    ] = None,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", "-v", help="Print the service's structured logs on stderr."),
    ] = False,
) -> None:
    """Work against the emulators where FIRESTORE_EMULATOR_HOST / PUBSUB_EMULATOR_HOST are set,
    else against the real project."""
    ctx.call_on_close(_route_logs(verbose))
    if isinstance(ctx.obj, CliContext):
        return  # handed in (tests)
    cli = CliContext(project_option=project, timeout_option=timeout)
    ctx.obj = cli
    ctx.call_on_close(cli.close)


def _route_logs(verbose: bool) -> Callable[[], None]:
    """Send the `execution` loggers' records to stderr as JSON lines, or nowhere.

    Without a handler, Python's last-resort handler would print bare event names (the sweeper
    logs each expiry at WARNING) into the tables. Returns the undo, for when the command ends.
    """
    logger = logging.getLogger("execution")
    handler: logging.Handler
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        previous_level = logger.level
        logger.setLevel(logging.INFO)
    else:
        handler = logging.NullHandler()
        previous_level = logger.level
    logger.addHandler(handler)

    def undo() -> None:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)

    return undo


app.command("publish")(publish)
app.command("reservations")(reservations)
app.command("sweep")(sweep)
app.command("reconcile")(reconcile)
app.add_typer(kill_switch.app, name="kill-switch")
app.command("status")(status)
app.command("intent")(intent)
app.command("dead-letters")(dead_letters)


def main() -> None:
    """Run the command line (`python -m execution`)."""
    # Click names the program as it was started: `python -m execution`, or the console script.
    app()
