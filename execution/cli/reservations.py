"""`reservations`: list reservation documents by tenant, account and status, or the stuck ones.

Which query runs (see `execution.cli.queries` for their indexes):

- `--stuck`: the sweeper's query, across tenants; `--tenant`/`--account` narrow it here.
- `--tenant T`: T's reservations, filtered by `--account` / `--status` in the query.
- neither: one status across every tenant (default `reserved`: what is in flight now).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

import typer
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
    if stuck and status not in (None, StatusChoice.reserved):
        raise typer.BadParameter(
            "--stuck lists reserved leases only; drop --status", param_hint="--status"
        )
    if account is not None and tenant is None and not stuck:
        raise typer.BadParameter(
            "account ids are per tenant: add --tenant (or use --stuck, which scans every tenant)",
            param_hint="--account",
        )
    now = cli.clock()
    db = cli.db()
    with cli.firestore_call("reservations query"):
        if stuck:
            snaps = read_pages(
                stuck_reservations_query(db, now),
                cli.policy,
                limit=limit + 1,
                keep=lambda s: _matches(ReservationRow.from_snapshot(s), tenant, account),
            )
            title = "Stuck reservations (reserved past expires_at), oldest first"
        elif tenant is not None:
            snaps = read_pages(
                tenant_reservations_query(
                    db,
                    tenant,
                    broker_account_id=account,
                    status=status.value if status else None,
                ),
                cli.policy,
                limit=limit + 1,
            )
            title = f"Reservations of tenant {tenant}"
        else:
            chosen = (status or StatusChoice.reserved).value
            snaps = read_pages(
                reservations_by_status_query(db, chosen), cli.policy, limit=limit + 1
            )
            title = f"Reservations in status {chosen}, all tenants, soonest expiry first"
        rows = [ReservationRow.from_snapshot(snap) for snap in snaps]
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
    # Narrow enough for a 100-column terminal: the tenant column is left out where --tenant
    # names it (the title says it); --json has every field.
    columns = ("account", "intent", "USD", "state", "attempt", "lease")
    out.print(
        table(
            title,
            columns if tenant is not None else ("tenant", *columns),
            (
                (
                    *(() if tenant is not None else (row.tenant_id,)),
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
    )
    shown = f"{len(rows)} shown"
    if more:
        shown += (
            f"; more match: raise --limit (now {limit}) or narrow with --tenant/--account/--status"
        )
    out.print(shown, markup=False)


def _state(row: ReservationRow, now: datetime) -> Text:
    """`reserved`, `STUCK`, or `released: placed` / `expired: expired`; `(repaired)` where the
    record was brought to what the broker holds (see `repair` in --json)."""
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
