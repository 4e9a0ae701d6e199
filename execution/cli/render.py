"""Output helpers: Rich tables for people, plain JSON for scripts, and short times."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from execution.text import bounded_printable, printable


class PrintableConsole(Console):
    """A console that shows every string it renders printable (`execution.text.printable`).

    What the commands print comes from outside: brokers' words, records anyone with write
    access could have filled, dead letters. An escape sequence among them (clear the screen,
    retitle the window, write the clipboard, a bidi override) is shown escaped, never run in
    the operator's terminal. Table cells are made printable by `cell`.
    """

    def render_str(self, text: str, **kwargs: Any) -> Text:
        """`text` made printable, then rendered as Rich does."""
        return super().render_str(printable(text), **kwargs)


def console(*, stderr: bool = False, soft_wrap: bool = False) -> Console:
    """A console on stdout (or stderr); width from the terminal, else `COLUMNS`, else 80."""
    return PrintableConsole(highlight=False, stderr=stderr, soft_wrap=soft_wrap)


def print_json(value: Any) -> None:
    """Machine-readable output: indented JSON on stdout, no colour, no wrapping.

    Strict JSON (RFC 8259): a non-finite number a record holds (Firestore stores NaN and
    infinities) is written as the string `"NaN"`, `"Infinity"` or `"-Infinity"`, since most
    parsers (jq, JavaScript, Go) refuse the bare tokens Python would write.
    """
    typer.echo(
        json.dumps(_finite(value), indent=2, sort_keys=False, default=_default, allow_nan=False)
    )


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


KEY_COLUMNS = frozenset(
    {
        "tenant",
        "account",
        "intent",
        "client_intent_id",
        "message id",
        "message_id",
        "line",
        "symbol",
        "status",
        "outcome",
        "state",
        "scope",
        "attempt",
        "USD",
    }
)
"""Columns that narrow last: on a small terminal, free text wraps before an id does."""


def run_limit(seconds: float) -> str:
    """What an operator watching a bounded run needs: when it stops, and what then."""
    return (
        f"time limit {seconds:g} s (SWEEP_DEADLINE_SECONDS): at it the run stops and reports "
        "itself incomplete; run it again to finish"
    )


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    """A table whose cells are data, never markup (ids may contain `[`)."""
    result = Table(title=title, title_justify="left", title_style="bold", expand=False)
    for name in columns:
        result.add_column(name, overflow="fold", no_wrap=name in KEY_COLUMNS)
    for row in rows:
        result.add_row(*(cell(value) for value in row))
    return result


MAX_CELL_CHARS = 1000
"""The most of one value a table shows (the cut is noted with the value's length; `--json`
gives it whole): a record anyone with write access could have filled holds up to a megabyte
in one field, which as a cell took 40 s to render and 10 MB of the operator's scrollback."""


def cell(value: Any) -> Text:
    """One table cell as plain text: one value, on its own line breaks escaped (a `\\n` in a
    record cannot draw a row of its own), and bounded (`MAX_CELL_CHARS`)."""
    if value is None:
        return Text("")
    if isinstance(value, Text):
        return value
    if isinstance(value, datetime):
        return Text(when(value))
    if isinstance(value, float):
        return Text(f"{value:,.2f}")
    return Text(bounded_printable(str(value), MAX_CELL_CHARS))


def when(value: datetime | None) -> str:
    """`2026-01-05 14:30:00Z`."""
    if value is None:
        return ""
    return value.strftime("%Y-%m-%d %H:%M:%SZ")


def age(seconds: float) -> str:
    """`42s`, `3m 05s`, `2h 10m`, `3d 4h`."""
    whole = int(abs(seconds))
    if whole < 60:
        text = f"{whole}s"
    elif whole < 3600:
        text = f"{whole // 60}m {whole % 60:02d}s"
    elif whole < 86400:
        text = f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    else:
        text = f"{whole // 86400}d {whole % 86400 // 3600}h"
    return text if seconds >= 0 else f"-{text}"


def relative(value: datetime | None, now: datetime) -> str:
    """`in 5m 00s` or `2m 10s ago`."""
    if value is None:
        return ""
    delta = (value - now).total_seconds()
    return f"in {age(delta)}" if delta > 0 else f"{age(-delta)} ago"


def on_off(enabled: bool) -> Text:
    """A switch state that stands out when on."""
    return Text("ON", style="bold red") if enabled else Text("off", style="green")


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)
