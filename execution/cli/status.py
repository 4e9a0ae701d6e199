"""`status`: one screen of what matters now.

Kill switches, this environment's trading settings, in-flight reservations per account (with
stuck ones and the account's budget), the latest outcomes, and the latest dead letters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

import typer
from google.api_core import exceptions as gexc
from rich.console import Console, Group
from rich.panel import Panel
from rich.text import Text

from execution.cli.context import CliContext, document_id, is_missing_index, reports_errors
from execution.cli.kill_switch import read_account_halts, read_switches, switches_table
from execution.cli.queries import (
    DeadLetterRow,
    KillSwitchRow,
    ReservationRow,
    read_pages,
    recent_dead_letters_query,
    recent_outcomes_query,
    reservations_by_status_query,
    tenant_reservations_query,
)
from execution.cli.render import console, on_off, print_json, relative, table, when
from execution.documents import AccountSettings, MalformedAccountError
from execution.firestore.paths import account_ref
from execution.reservations import ReservationStatus

RESERVED = ReservationStatus.RESERVED.value
INDEX_HINT = (
    "needs the collection-group index on released_at: "
    "`firebase deploy --only firestore:indexes`, or pass --tenant"
)


@dataclass
class AccountInFlight:
    """The `reserved` leases of one account."""

    tenant_id: str
    broker_account_id: str
    live: int = 0
    live_usd: float = 0.0
    stuck: int = 0
    oldest_created_at: datetime | None = None
    max_inflight_usd: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "tenant_id": self.tenant_id,
            "broker_account_id": self.broker_account_id,
            "live": self.live,
            "live_usd": self.live_usd,
            "stuck": self.stuck,
            "oldest_created_at": self.oldest_created_at.isoformat()
            if self.oldest_created_at
            else None,
            "max_inflight_usd": self.max_inflight_usd,
        }


@dataclass
class Snapshot:
    """Everything `status` shows."""

    now: datetime
    switches: list[KillSwitchRow]
    in_flight: list[AccountInFlight]
    outcomes: list[ReservationRow] | None
    outcomes_problem: str | None
    dead_letters: list[DeadLetterRow]
    settings: dict[str, Any] = field(default_factory=dict)
    switches_problem: str | None = None


@reports_errors
def status(
    ctx: typer.Context,
    tenant: Annotated[
        str | None, typer.Option(help="Only this tenant.", callback=document_id)
    ] = None,
    recent: Annotated[
        int, typer.Option(min=1, help="How many recent outcomes and dead letters to show.")
    ] = 10,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print JSON instead of tables.")
    ] = False,
) -> None:
    """Kill switches, agent mode, in-flight per account, recent outcomes and dead letters."""
    cli: CliContext = ctx.obj
    out = console()
    with out.status("Reading the store..."):
        snapshot = _read(cli, tenant, recent)
    if json_output:
        print_json(
            {
                "project": cli.project,
                "firestore": cli.firestore_target,
                "settings": snapshot.settings,
                "kill_switches": [row.as_dict() for row in snapshot.switches],
                "kill_switches_problem": snapshot.switches_problem,
                "in_flight": [row.as_dict() for row in snapshot.in_flight],
                "recent_outcomes": None
                if snapshot.outcomes is None
                else [row.as_dict() for row in snapshot.outcomes],
                "recent_outcomes_problem": snapshot.outcomes_problem,
                "dead_letters": [row.as_dict() for row in snapshot.dead_letters],
            }
        )
        return
    _render(cli, snapshot, tenant)


def _read(cli: CliContext, tenant: str | None, recent: int) -> Snapshot:
    db = cli.db()
    now = cli.clock()
    settings = cli.settings
    halted_accounts, switches_problem = read_account_halts(cli, tenant)
    switches = [*read_switches(cli, tenant), *halted_accounts]
    with cli.firestore_call("status read"):
        reserved_query = (
            reservations_by_status_query(db, RESERVED)
            if tenant is None
            else tenant_reservations_query(db, tenant, status=RESERVED)
        )
        reserved = [
            ReservationRow.from_snapshot(snap) for snap in read_pages(reserved_query, cli.policy)
        ]
        in_flight = _per_account(reserved, now)
        if in_flight:
            refs = [account_ref(db, a.tenant_id, a.broker_account_id) for a in in_flight]
            accounts = {s.reference.path: s for s in db.get_all(refs, **cli.policy.kwargs())}
            for row, ref in zip(in_flight, refs, strict=True):
                snap = accounts.get(ref.path)
                row.max_inflight_usd = _budget(snap.to_dict() if snap is not None else None)
        outcomes: list[ReservationRow] | None
        problem = None
        try:
            outcomes = [
                row
                for row in (
                    ReservationRow.from_snapshot(snap)
                    for snap in recent_outcomes_query(db, tenant)
                    .limit(recent)
                    .stream(**cli.policy.kwargs())
                )
                if row.released_at is not None
            ]
        except gexc.FailedPrecondition as exc:
            if not is_missing_index(exc):
                raise
            outcomes, problem = None, INDEX_HINT
        dead_letters = [
            DeadLetterRow.from_snapshot(snap)
            for snap in recent_dead_letters_query(db).limit(recent).stream(**cli.policy.kwargs())
        ]
    return Snapshot(
        now=now,
        switches=switches,
        in_flight=in_flight,
        outcomes=outcomes,
        outcomes_problem=problem,
        dead_letters=dead_letters,
        switches_problem=switches_problem,
        settings={
            "agent_mode": settings.agent_mode.value,
            "execution_halted": settings.execution_halted,
            "execution_dry_run": settings.execution_dry_run,
            "broker": settings.broker,
            "intent_topic": settings.intent_topic,
        },
    )


def _per_account(rows: list[ReservationRow], now: datetime) -> list[AccountInFlight]:
    accounts: dict[tuple[str, str], AccountInFlight] = {}
    for row in rows:
        key = (row.tenant_id, row.broker_account_id)
        entry = accounts.setdefault(key, AccountInFlight(*key))
        if row.is_stuck(now):
            entry.stuck += 1
        else:
            entry.live += 1
            entry.live_usd += row.amount_usd
        if row.created_at and (
            entry.oldest_created_at is None or row.created_at < entry.oldest_created_at
        ):
            entry.oldest_created_at = row.created_at
    return [accounts[key] for key in sorted(accounts)]


def _render(cli: CliContext, snap: Snapshot, tenant: str | None) -> None:
    out = console()
    out.print(_overview(cli, snap))
    out.print(switches_table(snap.switches, cli))
    if snap.switches_problem is not None:
        out.print(f"Note: {snap.switches_problem}.", markup=False)
    _print_in_flight(out, snap)
    _print_outcomes(out, snap, tenant)
    _print_dead_letters(out, snap)


def _overview(cli: CliContext, snap: Snapshot) -> Panel:
    """Where this shell points, its trading settings, and whether a kill switch halts."""
    halted = cli.settings.execution_halted or any(
        row.enabled for row in snap.switches if row.broker_account_id is None
    )
    halted_accounts = [row.scope for row in snap.switches if row.broker_account_id is not None]
    header = Text.assemble(
        ("project ", "bold"),
        cli.project,
        "  ",
        ("Firestore ", "bold"),
        cli.firestore_target,
        "  ",
        ("Pub/Sub ", "bold"),
        cli.pubsub_target,
        "  ",
        ("at ", "bold"),
        when(snap.now),
    )
    mode = Text.assemble(
        ("AGENT_MODE ", "bold"),
        cli.settings.agent_mode.value,
        "  ",
        ("EXECUTION_HALTED ", "bold"),
        on_off(cli.settings.execution_halted),
        "  ",
        ("EXECUTION_DRY_RUN ", "bold"),
        "on" if cli.settings.execution_dry_run else "off",
        "  ",
        ("BROKER ", "bold"),
        cli.settings.broker,
    )
    note = Text(
        "Settings as this shell's environment sets them; the deployed function has its own.",
        style="dim",
    )
    if halted:
        verdict = Text("HALTED: a kill switch is on", style="bold red")
    elif halted_accounts:
        verdict = Text(
            f"Halted accounts (trading_mode OFF): {', '.join(halted_accounts)}; others allowed",
            style="bold yellow",
        )
    else:
        verdict = Text("Execution allowed by every kill switch", style="green")
    return Panel(Group(header, mode, note, verdict), title="execution status", title_align="left")


def _print_in_flight(out: Console, snap: Snapshot) -> None:
    now = snap.now
    if snap.in_flight:
        out.print(
            table(
                "In flight (reserved), per account",
                ("tenant", "account", "live", "live USD", "budget USD", "stuck", "oldest"),
                (
                    (
                        row.tenant_id,
                        row.broker_account_id,
                        row.live,
                        row.live_usd,
                        row.max_inflight_usd,
                        Text(str(row.stuck), style="bold red") if row.stuck else "0",
                        relative(row.oldest_created_at, now),
                    )
                    for row in snap.in_flight
                ),
            )
        )
        stuck = sum(row.stuck for row in snap.in_flight)
        if stuck:
            out.print(
                f"{stuck} stuck lease(s): their invocation died. `python -m execution sweep` "
                "expires them (the scheduled sweeper would too).",
                markup=False,
            )
    else:
        out.print("In flight: nothing reserved.", markup=False)


def _print_outcomes(out: Console, snap: Snapshot, tenant: str | None) -> None:
    now = snap.now
    if snap.outcomes is None:
        out.print(f"Recent outcomes: unavailable ({snap.outcomes_problem}).", markup=False)
    elif snap.outcomes:
        out.print(
            table(
                "Recent outcomes" + (f" of tenant {tenant}" if tenant else ""),
                ("released", "tenant", "account", "client_intent_id", "outcome", "detail"),
                (
                    (
                        relative(row.released_at, now),
                        row.tenant_id,
                        row.broker_account_id,
                        row.client_intent_id,
                        row.outcome,
                        row.error or row.broker_order_id,
                    )
                    for row in snap.outcomes
                ),
            )
        )
    else:
        out.print("Recent outcomes: none yet.", markup=False)


def _print_dead_letters(out: Console, snap: Snapshot) -> None:
    now = snap.now
    if snap.dead_letters:
        out.print(
            table(
                "Recent dead letters (execution_dead_letters, all tenants)",
                ("recorded", "message_id", "reason"),
                (
                    (relative(row.recorded_at, now), row.message_id, _short(row.reason))
                    for row in snap.dead_letters
                ),
            )
        )
        out.print(
            "Never executed. Why, the payload and how to publish it again safely: "
            "`dead-letters MESSAGE_ID`.",
            markup=False,
        )
    else:
        out.print("Dead letters: none.", markup=False)


def _short(text: str, size: int = 160) -> str:
    return text if len(text) <= size else text[: size - 3] + "..."


def _budget(document: dict[str, Any] | None) -> float | None:
    """The account's in-flight budget; None where it sets none or cannot be read."""
    try:
        return AccountSettings.parse(document or {}).max_inflight_usd
    except MalformedAccountError:
        return None
