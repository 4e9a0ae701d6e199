"""`publish`: send trade intents to the intents topic, validated first, with progress and a summary.

Every line is checked with `execution.intake.parse_intent`, the function's own parser, before
anything is sent. By default one invalid line stops the whole file (nothing is published: a
half-sent batch is harder to reason about than none); `--allow-invalid` sends invalid lines
as they are, to watch the function dead-letter them (`execution_dead_letters/{message_id}`).
An invalid line is reported with its reason and the ids it still names as text (tenant, account,
client_intent_id), so the operator can find it and its dead letter.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from google.api_core import exceptions as gexc
from google.cloud.pubsub_v1.publisher.futures import Future as PublishFuture
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from execution.cli.context import EXIT_PROBLEMS, CliContext, CliError, document_id, reports_errors
from execution.cli.render import console, print_json, table
from execution.errors import InvalidIntentError
from execution.intake import MAX_INTENT_BYTES, parse_intent
from execution.models import TradeIntent
from execution.text import bounded_printable

SHOWN_ROWS = 20
"""The summary table lists the first rows only; `--json` lists them all."""
ID_FIELDS = ("tenant_id", "broker_account_id", "client_intent_id")
MAX_SHOWN_ID_CHARS = 128
"""An invalid line's ids come from outside: shown printable and cut to this length."""


@dataclass(frozen=True)
class Line:
    """One message to send: where it came from, its bytes, and what validation said."""

    number: int
    data: bytes
    intent: TradeIntent | None
    problem: str | None
    ids: dict[str, str]
    """The `ID_FIELDS` it names: the intent's, or what an invalid line still shows as text."""


@dataclass(frozen=True)
class Sent:
    """What became of one line."""

    line: Line
    message_id: str | None
    error: str | None


@reports_errors
def publish(
    ctx: typer.Context,
    file: Annotated[
        str | None,
        typer.Argument(
            metavar="FILE",
            help="JSON lines, one trade intent per line ('-' reads stdin). Omit it to publish "
            "one intent built from the options below.",
            show_default=False,
        ),
    ] = None,
    tenant: Annotated[
        str | None, typer.Option(help="tenant_id (single intent).", callback=document_id)
    ] = None,
    account: Annotated[
        str | None, typer.Option(help="broker_account_id (single intent).", callback=document_id)
    ] = None,
    symbol: Annotated[str | None, typer.Option(help="Ticker, e.g. AAPL (single intent).")] = None,
    side: Annotated[str | None, typer.Option(help="buy or sell (single intent).")] = None,
    qty: Annotated[float | None, typer.Option(help="Quantity, > 0 (single intent).")] = None,
    limit_price: Annotated[
        float | None, typer.Option(help="Limit price; makes it a limit order.")
    ] = None,
    order_type: Annotated[
        str | None, typer.Option(help="market or limit (default: limit when --limit-price).")
    ] = None,
    notional_usd: Annotated[
        float | None, typer.Option(help="Amount to reserve, in USD (optional).")
    ] = None,
    intent_id: Annotated[
        str | None, typer.Option(help="client_intent_id (default: cli-<random>).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Mark the intent dry_run: stops before the broker.")
    ] = False,
    allow_invalid: Annotated[
        bool,
        typer.Option(
            "--allow-invalid",
            help="Publish invalid lines too, as they are (to watch them being dead-lettered).",
        ),
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Publish trade intents to the intents topic (INTENT_TOPIC, default trade-intents)."""
    cli: CliContext = ctx.obj
    flags: dict[str, Any] = {
        "tenant_id": tenant,
        "broker_account_id": account,
        "symbol": symbol,
        "side": side,
        "qty": qty,
        "limit_price": limit_price,
        "order_type": order_type,
        "notional_usd": notional_usd,
        "client_intent_id": intent_id,
    }
    given = {name: value for name, value in flags.items() if value is not None}
    if file is not None and (given or dry_run):
        raise typer.BadParameter("give either FILE or the single-intent options, not both")
    if file is None:
        lines = [_line_from_flags(cli, given, dry_run=dry_run)]
        source = "options"
        if lines[0].problem is not None and not allow_invalid:
            raise typer.BadParameter(lines[0].problem)
    else:
        lines = _lines_from_file(file)
        source = "stdin" if file == "-" else file
    if not lines:
        raise CliError(f"No intents in {source}: expected one JSON object per line.", EXIT_PROBLEMS)

    invalid = [line for line in lines if line.problem is not None]
    if invalid and not allow_invalid:
        _report_invalid(invalid, len(lines), source, json_output)
        raise typer.Exit(EXIT_PROBLEMS)

    _check_topic(cli)
    sent = _send(cli, lines, show_progress=not json_output)
    _report_sent(cli, sent, json_output)
    if any(item.error for item in sent):
        raise typer.Exit(EXIT_PROBLEMS)


def _line_from_flags(cli: CliContext, given: dict[str, Any], *, dry_run: bool) -> Line:
    missing = [
        option
        for option, name in (
            ("--tenant", "tenant_id"),
            ("--account", "broker_account_id"),
            ("--symbol", "symbol"),
            ("--side", "side"),
            ("--qty", "qty"),
        )
        if name not in given
    ]
    if missing:
        raise typer.BadParameter(
            f"give a FILE of intents, or {', '.join(missing)} for a single intent"
        )
    document = {
        "client_intent_id": f"cli-{uuid.uuid4().hex[:12]}",
        "order_type": "limit" if "limit_price" in given else "market",
        "created_at": cli.clock().isoformat(),
        **given,
    }
    if dry_run:
        document["dry_run"] = True
    return _validated(1, json.dumps(document).encode())


def _lines_from_file(file: str) -> list[Line]:
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"Cannot read {file}: {exc}", EXIT_PROBLEMS) from exc
    return [
        _validated(number, raw.strip().encode())
        for number, raw in enumerate(text.splitlines(), 1)
        if raw.strip()
    ]


def _validated(number: int, data: bytes) -> Line:
    try:
        intent = parse_intent(data)
    except InvalidIntentError as exc:
        return Line(number, data, None, str(exc), _readable_ids(data))
    return Line(number, data, intent, None, {name: getattr(intent, name) for name in ID_FIELDS})


def _readable_ids(data: bytes) -> dict[str, str]:
    """The `ID_FIELDS` an invalid line's JSON object holds as text, printable and bounded.

    None where the JSON cannot be read (or is too large to try), and none that is written twice:
    which of the two the publisher meant is a guess (`execution.intake` refuses such a line).
    """
    if len(data) > MAX_INTENT_BYTES:
        return {}
    try:
        document = json.loads(data, object_pairs_hook=_without_repeated_keys)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return {}
    if not isinstance(document, dict):
        return {}
    return {
        name: bounded_printable(value, MAX_SHOWN_ID_CHARS)
        for name in ID_FIELDS
        if isinstance(value := document.get(name), str)
    }


def _without_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    counts = Counter(key for key, _value in pairs)
    return {key: value for key, value in pairs if counts[key] == 1}


def _report_invalid(invalid: list[Line], total: int, source: str, json_output: bool) -> None:
    if json_output:
        print_json(
            {
                "published": [],
                "invalid": [
                    {"line": line.number, **line.ids, "reason": line.problem} for line in invalid
                ],
            }
        )
    else:
        out = console()
        out.print(
            table(
                f"Invalid lines in {source}",
                ("line", "tenant", "account", "client_intent_id", "reason"),
                ((line.number, *_shown_ids(line), line.problem) for line in invalid),
            )
        )
    typer.echo(
        f"{len(invalid)} of {total} lines are not valid trade intents; nothing was published. "
        "Fix them, or pass --allow-invalid to publish them anyway (the function dead-letters "
        "them).",
        err=True,
    )


def _check_topic(cli: CliContext) -> None:
    """Fail before sending anything where the topic is missing or Pub/Sub unreachable."""
    publisher = cli.publisher()
    try:
        with cli.pubsub_call("topic check"):
            publisher.get_topic(
                request={"topic": cli.topic_path},
                timeout=cli.timeout_seconds,
                retry=cli.pubsub_retry(),
            )
    except CliError as exc:
        # roles/pubsub.publisher may publish but not read the topic: let the publish decide.
        if not isinstance(exc.__cause__, gexc.PermissionDenied):
            raise


def _send(cli: CliContext, lines: list[Line], *, show_progress: bool) -> list[Sent]:
    publisher = cli.publisher()
    out = console()
    progress = Progress(
        TextColumn("[bold]Publishing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=out,
        disable=not (show_progress and out.is_terminal),
    )
    pending: list[tuple[Line, PublishFuture]] = []
    results: list[Sent] = []
    with progress:
        task = progress.add_task("publish", total=len(lines))
        for line in lines:
            with cli.pubsub_call("publish"):
                future = publisher.publish(
                    cli.topic_path,
                    line.data,
                    retry=cli.pubsub_retry(),
                    timeout=cli.timeout_seconds,
                    source="execution-cli",
                )
            future.add_done_callback(lambda _f: progress.advance(task))
            pending.append((line, future))
        for line, future in pending:
            try:
                message_id = str(future.result(timeout=cli.timeout_seconds * 2 + 5))
            except gexc.NotFound as exc:
                raise cli.missing_topic() from exc
            except Exception as exc:  # reported per line; the others may still have gone out
                results.append(Sent(line, None, f"{type(exc).__name__}: {exc}"))
            else:
                results.append(Sent(line, message_id, None))
    return results


def _report_sent(cli: CliContext, sent: list[Sent], json_output: bool) -> None:
    ok = [item for item in sent if item.error is None]
    failed = [item for item in sent if item.error is not None]
    invalid_sent = [item for item in ok if item.line.problem is not None]
    if json_output:
        print_json(
            {
                "topic": cli.topic_path,
                "published": [_as_dict(item) for item in ok],
                "failed": [_as_dict(item) for item in failed],
            }
        )
        return
    out = console()
    rows = [
        (
            item.line.number,
            *_shown_ids(item.line),
            item.message_id or "",
            item.error or item.line.problem or "",
        )
        for item in sent[:SHOWN_ROWS]
    ]
    columns = ("line", "tenant", "account", "client_intent_id", "message id", "note")
    out.print(table(None, columns, rows))
    if len(sent) > SHOWN_ROWS:
        out.print(f"... and {len(sent) - SHOWN_ROWS} more (--json lists them all)", markup=False)
    summary = (
        f"Published {len(ok)} of {len(sent)} intents to {cli.topic_path} ({cli.pubsub_target})."
    )
    if invalid_sent:
        summary += f" {len(invalid_sent)} of them invalid: expect dead letters."
    if failed:
        summary += f" {len(failed)} failed; publish those lines again."
    out.print(summary, markup=False)


def _shown_ids(line: Line) -> tuple[str, str, str]:
    """Tenant, account and client_intent_id for a table row ("" where none could be read)."""
    tenant, account, intent = (line.ids.get(name, "") for name in ID_FIELDS)
    return tenant, account, intent or "(no readable id)"


def _as_dict(item: Sent) -> dict[str, Any]:
    return {
        "line": item.line.number,
        **{name: item.line.ids.get(name) for name in ID_FIELDS},
        "message_id": item.message_id,
        "error": item.error,
        "invalid": item.line.problem,
    }
