"""`reservations`: list reservation documents by tenant, account and status, or the stuck ones.

Which query runs (see `execution.cli.queries` for their indexes):

- `--stuck`: the sweeper's query, across tenants; `--tenant`/`--account` narrow it here.
- `--tenant T`: T's reservations, filtered by `--account` / `--status` in the query.
- neither: one status across every tenant (default `reserved`: what is in flight now).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import datetime
from enum import StrEnum
from typing import Annotated

import typer
from google.cloud import firestore
from rich.table import Table
from rich.text import Text

from execution.cli.context import CliContext, document_id, reports_errors
from execution.cli.queries import (
    ReservationRow,
    read_pages,
    reservations_by_status_query,
    stuck_reservations_query,
    tenant_reservations_query,
)
from execution.cli.render import console, print_json, relative, table
from execution.reservations import ReservationStatus


class StatusChoice(StrEnum):
    """The `status` values of a reservation document (contract)."""

    reserved = ReservationStatus.RESERVED.value
    released = ReservationStatus.RELEASED.value
    expired = ReservationStatus.EXPIRED.value


@reports_errors
def reservations(
    ctx: typer.Context,
    tenant: Annotated[
        str | None, typer.Option(help="Only this tenant_id.", callback=document_id)
    ] = None,
    account: Annotated[
        str | None,
        typer.Option(
            help="Only this broker_account_id (needs --tenant unless --stuck).",
            callback=document_id,
        ),
    ] = None,
    status: Annotated[
        StatusChoice | None,
        typer.Option(
            help="Only this status. Across all tenants (no --tenant) it defaults to reserved."
        ),
    ] = None,
    stuck: Annotated[
        bool,
        typer.Option("--stuck", help="Only reserved past expires_at: what `sweep` would expire."),
    ] = False,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many.")] = 50,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print JSON instead of a table.")
    ] = False,
) -> None:
    """List reservations (tenants/{tenant}/execution_reservations), as a table or --json."""
    cli: CliContext = ctx.obj
    _check_options(tenant, account, status, stuck)
    now = cli.clock()
    with cli.firestore_call("reservations query"):
        title, found = _read(cli, now, tenant=tenant, account=account, status=status, stuck=stuck)
        rows = list(itertools.islice(found, limit + 1))
    more = len(rows) > limit
    rows = rows[:limit]
    if tenant is not None and not stuck:
        # Equality-only queries come back in document-id order; newest first reads better.
        rows.sort(key=lambda r: r.created_at.timestamp() if r.created_at else 0.0, reverse=True)
    if json_output:
        print_json([row.as_dict() for row in rows])
        return
    out = console()
    if not rows:
        out.print(f"{title}: none.", markup=False)
        return
    out.print(_table(title, rows, now, with_tenant=tenant is None))
    shown = f"{len(rows)} shown"
    if more:
        shown += (
            f"; more match: raise --limit (now {limit}) or narrow with --tenant/--account/--status"
        )
    out.print(shown, markup=False)


def _check_options(
    tenant: str | None, account: str | None, status: StatusChoice | None, stuck: bool
) -> None:
    """Refuse the combinations no query answers."""
    if stuck and status not in (None, StatusChoice.reserved):
        raise typer.BadParameter(
            "--stuck lists reserved leases only; drop --status", param_hint="--status"
        )
    if account is not None and tenant is None and not stuck:
        raise typer.BadParameter(
            "account ids are per tenant: add --tenant (or use --stuck, which scans every tenant)",
            param_hint="--account",
        )


def _read(
    cli: CliContext,
    now: datetime,
    *,
    tenant: str | None,
    account: str | None,
    status: StatusChoice | None,
    stuck: bool,
) -> tuple[str, Iterator[ReservationRow]]:
    """The listing's title and its rows, read lazily page by page."""
    db = cli.db()
    if stuck:
        found = _rows(stuck_reservations_query(db, now), cli)
        rows = (row for row in found if _matches(row, tenant, account))
        return "Stuck reservations (reserved past expires_at), oldest first", rows
    if tenant is not None:
        query = tenant_reservations_query(
            db, tenant, broker_account_id=account, status=status.value if status else None
        )
        return f"Reservations of tenant {tenant}", _rows(query, cli)
    chosen = (status or StatusChoice.reserved).value
    title = f"Reservations in status {chosen}, all tenants, soonest expiry first"
    return title, _rows(reservations_by_status_query(db, chosen), cli)


def _rows(query: firestore.Query, cli: CliContext) -> Iterator[ReservationRow]:
    return map(ReservationRow.from_snapshot, read_pages(query, cli.policy))


def _table(title: str, rows: list[ReservationRow], now: datetime, *, with_tenant: bool) -> Table:
    """Narrow enough for a 100-column terminal: the tenant column is left out where --tenant
    names it (the title says it); --json has every field."""
    columns = ("account", "intent", "USD", "state", "attempt", "lease")
    return table(
        title,
        ("tenant", *columns) if with_tenant else columns,
        (
            (
                *((row.tenant_id,) if with_tenant else ()),
                row.broker_account_id,
                row.client_intent_id,
                row.amount_usd,
                _state(row, now),
                row.attempt,
                _lease(row, now),
            )
            for row in rows
        ),
    )


def _state(row: ReservationRow, now: datetime) -> Text:
    """`reserved`, `STUCK`, or `released: placed` / `expired: expired`; `(repaired)` where the
    record was brought to what the broker holds (see `repair` in --json); `MALFORMED` where the
    document cannot be read (its `problem` in --json)."""
    if row.problem is not None:
        return Text("MALFORMED", style="bold red")
    if row.is_stuck(now):
        return Text("STUCK", style="bold red")
    state = f"{row.status}: {row.outcome}" if row.outcome else row.status
    if row.repair is not None:
        return Text(f"{state} (repaired)", style="bold yellow")
    return Text(state)


def _lease(row: ReservationRow, now: datetime) -> str:
    """What the lease is doing: expiring, lapsed (stuck), or ended."""
    if row.status == StatusChoice.reserved.value:
        if row.is_stuck(now):
            return f"lapsed {relative(row.expires_at, now)}"
        return f"expires {relative(row.expires_at, now)}"
    return f"ended {relative(row.released_at, now)}" if row.released_at else ""


def _matches(row: ReservationRow, tenant: str | None, account: str | None) -> bool:
    return (tenant is None or row.tenant_id == tenant) and (
        account is None or row.broker_account_id == account
    )
