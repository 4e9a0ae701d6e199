"""`kill-switch on|off|status`: halt everything, a tenant or an account, with who and why.

Documents (contract): `ops/execution_kill_switch` and
`tenants/{tenant_id}/ops/execution_kill_switch`, `{enabled, reason, updated_by, updated_at}`.
The engine reads them right before the broker call. An account (`--tenant T --account A`) is
halted through its settings document, `tenants/T/accounts/A`: `trading_mode: OFF` (the
account's own narrowing of AGENT_MODE), with the same `kill_switch` fields and the mode it had
before (`previous_trading_mode`), which `off` puts back.

`on --cancel-open` also cancels the open broker orders of ours in that scope
(`execution.cli.cancel_open`), after the switch is on, and reports the scope's intents still in
flight: one that passed its gates before the switch went on may place its order after the
listing, so the command answers success only where none is.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Annotated, Any

import typer
from google.api_core import exceptions as gexc
from google.cloud import firestore
from rich.table import Table

from execution.cli.cancel_open import (
    CancelReport,
    LiveLease,
    Owner,
    Scope,
    cancel_open_orders,
    note_in_flight,
    owner_through_record,
    plain_owner,
)
from execution.cli.context import (
    EXIT_PROBLEMS,
    CliContext,
    CliError,
    default_operator,
    document_id,
    is_missing_index,
    reports_errors,
)
from execution.cli.queries import (
    KillSwitchRow,
    ReservationRow,
    halted_accounts_query,
    kill_switches_query,
    reservations_by_status_query,
    tenant_of,
    tenant_reservations_query,
)
from execution.cli.render import console, on_off, print_json, relative, run_limit, table
from execution.documents import KillSwitchDocument, MalformedDocumentError, ReservationKeys
from execution.errors import SwitchMovedError
from execution.firestore.paths import (
    ACCOUNTS,
    KILL_SWITCH,
    OPS,
    account_ref,
    kill_switch_ref,
    reservation_ref,
)
from execution.firestore.placed_records import FirestorePlacedRecords
from execution.firestore.switches import SwitchChange, SwitchWrite, change_switch
from execution.reservations import ReservationStatus
from execution.settings import AgentMode

app = typer.Typer(
    help="Halt execution globally, for a tenant or an account, resume it, or show the switches.",
    no_args_is_help=True,
)

TenantOption = Annotated[
    str | None,
    typer.Option(help="The tenant's switch (default: the global one).", callback=document_id),
]
AccountOption = Annotated[
    str | None,
    typer.Option(
        help="Only this broker_account_id of --tenant (its trading_mode goes OFF).",
        callback=document_id,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
ByOption = Annotated[
    str | None, typer.Option("--by", help="Who is acting (default: $USER, else git user.email).")
]


@app.command("on")
@reports_errors
def switch_on(
    ctx: typer.Context,
    reason: Annotated[str, typer.Option(help="Why execution is halted (stored on the document).")],
    tenant: TenantOption = None,
    account: AccountOption = None,
    cancel_open: Annotated[
        bool,
        typer.Option(
            "--cancel-open",
            help="Also cancel the broker's open orders of ours in this scope (BROKER, APCA_API_*).",
        ),
    ] = False,
    lookback: Annotated[
        float | None,
        typer.Option(
            min=1,
            help="Seconds of broker orders to look through for --cancel-open (default: "
            "RECONCILE_LOOKBACK_SECONDS, a day; older open orders, e.g. GTC, need more).",
            show_default=False,
        ),
    ] = None,
    by: ByOption = None,
    json_output: JsonOption = False,
) -> None:
    """Halt execution: intents reaching the broker stage end as `halted` (an account's with
    the reason `account_mode_off`). Exits 1 when a cancel was not done, or when the switch
    changed under the command."""
    cli: CliContext = ctx.obj
    if not reason.strip():
        raise typer.BadParameter("say why execution is halted", param_hint="--reason")
    row = _write(cli, tenant, account, enabled=True, reason=reason, by=by)
    report = _cancel_open(cli, Scope(tenant, account), lookback) if cancel_open else None
    if report is not None:
        # The cancels are worth something only while the switch stays on: read it again.
        report.switch_lifted = _lifted(cli, row)
    if json_output:
        print_json({"switch": row.as_dict(), "cancel_open": report.as_dict() if report else None})
    else:
        _print_on(row, reason, report)
    if report is not None and report.problems:
        raise typer.Exit(EXIT_PROBLEMS)


def _print_on(row: KillSwitchRow, reason: str, report: CancelReport | None) -> None:
    out = console()
    out.print(
        f"Kill switch ON for {row.scope} ({row.path}) by {row.updated_by}: {reason}", markup=False
    )
    out.print(
        "Intents delivered while it is on end as `halted`, a final outcome: they are not "
        "executed when it goes off (publish them again with new client_intent_ids).",
        markup=False,
    )
    if report is None:
        return
    columns = ("tenant_id", "broker_account_id", "client_order_id", "status", "result")
    out.print(
        table(
            f"Open orders of ours since {report.since:%Y-%m-%d %H:%M}Z",
            columns,
            [[c[k] for k in columns] for c in report.cancels],
        )
    )
    for client_order_id in report.unlocated:
        out.print(f"Not cancelled, no record names its owner: {client_order_id}", markup=False)
    for lease in report.in_flight:
        out.print(
            f"In flight, may still place an order until {lease['may_place_until']}: "
            f"{lease['tenant_id']}/{lease['broker_account_id']}/{lease['client_intent_id']}; "
            "run the command again after then.",
            markup=False,
        )
    if not report.complete:
        out.print(f"The listing stopped short ({report.error}): run again.", markup=False)
    if report.switch_lifted is not None:
        out.print(report.switch_lifted, markup=False)


@app.command("off")
@reports_errors
def switch_off(
    ctx: typer.Context,
    reason: Annotated[
        str | None, typer.Option(help="Why execution may resume (stored on the document).")
    ] = None,
    tenant: TenantOption = None,
    account: AccountOption = None,
    by: ByOption = None,
    json_output: JsonOption = False,
) -> None:
    """Resume execution (the other switches, and EXECUTION_HALTED, still apply). Exits 1,
    lifting nothing, when the switch changed after this command read it (an `on` landed)."""
    cli: CliContext = ctx.obj
    row = _write(cli, tenant, account, enabled=False, reason=reason, by=by)
    if json_output:
        print_json({"switch": row.as_dict()})
        return
    console().print(
        f"Kill switch off for {row.scope} ({row.path}) by {row.updated_by}"
        + (f": {reason}" if reason else "."),
        markup=False,
    )


@app.command("status")
@reports_errors
def switch_status(
    ctx: typer.Context,
    tenant: Annotated[
        str | None,
        typer.Option(help="Show the global switch and this tenant's only.", callback=document_id),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Show the global switch, every tenant switch that exists, and every halted account
    (`trading_mode: OFF`)."""
    cli: CliContext = ctx.obj
    accounts, problem = read_account_halts(cli, tenant)
    rows = [*read_switches(cli, tenant), *accounts]
    if json_output:
        print_json([row.as_dict() for row in rows])
        return
    console().print(switches_table(rows, cli))
    if problem is not None:
        console(stderr=True).print(f"Note: {problem}.", markup=False)


def read_switches(cli: CliContext, tenant: str | None) -> list[KillSwitchRow]:
    """The global switch (always, on or off), then tenant switches that have a document."""
    db = cli.db()
    with cli.firestore_call("kill switch read"):
        if tenant is not None:
            refs = [kill_switch_ref(db, None), kill_switch_ref(db, tenant)]
            snaps = {s.reference.path: s for s in db.get_all(refs, **cli.policy.kwargs())}
            return [KillSwitchRow.from_snapshot(snaps[ref.path]) for ref in refs]
        global_snap = kill_switch_ref(db, None).get(**cli.policy.kwargs())
        tenant_rows = [
            KillSwitchRow.from_snapshot(snap)
            for snap in kill_switches_query(db).stream(**cli.policy.kwargs())
            if snap.id == KILL_SWITCH and tenant_of(snap.reference, OPS) is not None
        ]
    tenant_rows.sort(key=lambda row: row.tenant_id or "")
    return [KillSwitchRow.from_snapshot(global_snap), *tenant_rows]


def read_account_halts(
    cli: CliContext, tenant: str | None
) -> tuple[list[KillSwitchRow], str | None]:
    """Accounts halted by their `trading_mode: OFF`, and a problem where they cannot be listed.

    Across tenants this needs the collection-group index on `accounts.trading_mode`: where it is
    not deployed yet, the switches are still shown, with how to deploy it.
    """
    with cli.firestore_call("halted accounts read"):
        try:
            snaps = list(halted_accounts_query(cli.db(), tenant).stream(**cli.policy.kwargs()))
        except gexc.FailedPrecondition as exc:
            if not is_missing_index(exc):
                raise
            return [], (
                "halted accounts not listed: needs the collection-group index on accounts."
                "trading_mode (`firebase deploy --only firestore:indexes`), or pass --tenant"
            )
    rows = [
        KillSwitchRow.from_account_snapshot(snap)
        for snap in snaps
        if tenant_of(snap.reference, ACCOUNTS) is not None  # no stray `accounts` elsewhere
    ]
    rows.sort(key=lambda row: (row.tenant_id or "", row.broker_account_id or ""))
    return rows, None


def switches_table(rows: list[KillSwitchRow], cli: CliContext) -> Table:
    """The switches as a table."""
    now = cli.clock()
    return table(
        "Kill switches",
        ("scope", "state", "reason", "updated_by", "updated"),
        (
            (
                row.scope,
                on_off(row.enabled),
                row.reason,
                row.updated_by,
                relative(row.updated_at, now),
            )
            for row in rows
        ),
    )


def _write(
    cli: CliContext,
    tenant: str | None,
    account: str | None,
    *,
    enabled: bool,
    reason: str | None,
    by: str | None,
) -> KillSwitchRow:
    """Turn the scope's switch on or off, atomically with the read it is decided on."""
    if account is not None and tenant is None:
        raise typer.BadParameter("account ids are per tenant: add --tenant", param_hint="--account")
    db = cli.db()
    row = KillSwitchRow(
        path="",
        tenant_id=tenant,
        broker_account_id=account,
        enabled=enabled,
        reason=reason,
        updated_by=by or default_operator(cli.environ),
        updated_at=cli.clock(),
    )
    fields = KillSwitchDocument(
        enabled=enabled, reason=reason, updated_by=row.updated_by, updated_at=row.updated_at
    ).to_document()
    if tenant is not None and account is not None:
        ref = account_ref(db, tenant, account)
        change = _account_change(fields)
    else:
        ref = kill_switch_ref(db, tenant)
        change = _switch_change(fields)
    with cli.firestore_call("kill switch write"):
        try:
            change_switch(db, ref, change, policy=cli.policy, after_read=cli.after_switch_read)
        except SwitchMovedError as exc:
            raise CliError(_moved_message(row, exc), EXIT_PROBLEMS) from exc
    return KillSwitchRow(**{**row.as_fields(), "path": ref.path})


def _moved_message(row: KillSwitchRow, exc: SwitchMovedError) -> str:
    now = exc.document
    if row.broker_account_id is not None:
        halt = (now or {}).get("kill_switch")
        now = halt if isinstance(halt, dict) else None
    switch = KillSwitchDocument.read(now)
    state = "ON" if switch.enabled else "off"
    return (
        f"Kill switch for {row.scope} not changed: {exc}. It is now {state}"
        f" (by {switch.updated_by}, {switch.reason or 'no reason'}). Read it "
        "(`kill-switch status`) and run the command again if you still mean it."
    )


SWITCH_FIELDS = tuple(KillSwitchDocument.model_fields)
"""The fields of a switch document that are the switch (an operator may keep others on it)."""


def _switch_change(fields: dict[str, Any]) -> SwitchChange:
    """Global or tenant switch: write the fields (others on the document stay)."""
    return SwitchChange(
        decide=lambda _data: SwitchWrite(fields),
        switch_of=lambda data: {k: (data or {}).get(k) for k in SWITCH_FIELDS},
        only_as_read=not fields["enabled"],
    )


ACCOUNT_FIELDS_OF_THE_SWITCH = frozenset({"kill_switch", "trading_mode"})
"""What `on` writes into an account's settings document."""


def _account_change(fields: dict[str, Any]) -> SwitchChange:
    """An account's halt: its `trading_mode`, with the halt's fields under `kill_switch`."""
    return SwitchChange(
        decide=lambda data: _halt_account(data, fields),
        switch_of=lambda data: ((data or {}).get("kill_switch"), (data or {}).get("trading_mode")),
        only_as_read=not fields["enabled"],
    )


def _halt_account(data: dict[str, Any] | None, fields: dict[str, Any]) -> SwitchWrite | None:
    """Set (or lift) the account's `trading_mode: OFF`, remembering the mode it replaced.

    Run twice, `on` keeps the mode from before the first `on`, never OFF itself. An account
    without a settings document is unknown (`REQUIRE_ACCOUNT_DOCUMENT=1` rejects its intents):
    `on` creates the document and says so (`kill_switch.created_document`), and `off` deletes it
    while it holds nothing else, so halting and resuming never makes an unknown account a known
    one without limits (nor does an `off` of an account that has no document). The write lands
    only on the document read (`change_switch`): limits added meanwhile stay, and a mode or a
    halt written meanwhile is read again before it is replaced.
    """
    stored = (data or {}).get("kill_switch")
    halt: dict[str, Any] = stored if isinstance(stored, dict) else {}
    halted_by_us = bool(halt.get("enabled"))
    if not fields["enabled"]:
        if data is None:
            return None  # nothing to lift, and no document to create
        if (
            halted_by_us
            and halt.get("created_document")
            and set(data) <= ACCOUNT_FIELDS_OF_THE_SWITCH
        ):
            return SwitchWrite(None)
    previous = (
        halt.get("previous_trading_mode") if halted_by_us else (data or {}).get("trading_mode")
    )
    created = bool(halt.get("created_document")) if halted_by_us else data is None
    update: dict[str, Any] = {
        "kill_switch": {**fields, "previous_trading_mode": previous, "created_document": created}
    }
    if fields["enabled"]:
        update["trading_mode"] = AgentMode.OFF.value
    elif halted_by_us:
        update["trading_mode"] = previous if previous is not None else firestore.DELETE_FIELD
    return SwitchWrite(update)


def _lifted(cli: CliContext, row: KillSwitchRow) -> str | None:
    """Why the scope `row` halted is no longer halted, or None while it still is."""
    db = cli.db()
    with cli.firestore_call("kill switch read"):
        if row.tenant_id is not None and row.broker_account_id is not None:
            ref = account_ref(db, row.tenant_id, row.broker_account_id)
        else:
            ref = kill_switch_ref(db, row.tenant_id)
        data = ref.get(**cli.policy.kwargs()).to_dict()
    if row.broker_account_id is not None:
        if (data or {}).get("trading_mode") == AgentMode.OFF.value:
            return None
        halt = (data or {}).get("kill_switch")
        data = halt if isinstance(halt, dict) else None
    elif KillSwitchDocument.read(data).enabled:
        return None
    switch = KillSwitchDocument.read(data)
    who = f" (by {switch.updated_by}, {switch.reason or 'no reason'})" if switch.updated_by else ""
    return (
        f"The switch for {row.scope} was turned off while the command ran{who}: orders may have "
        "been placed after the listing. Run `kill-switch on --cancel-open` again if the scope "
        "must stay halted."
    )


def _cancel_open(cli: CliContext, scope: Scope, lookback: float | None) -> CancelReport:
    """List the broker's orders and cancel the open ones of ours in `scope`."""
    db = cli.db()
    records = FirestorePlacedRecords(db, policy=cli.policy)

    def account_of(tenant: str, intent: str) -> str | None:
        snap = reservation_ref(db, tenant, intent).get(**cli.policy.kwargs())
        try:
            return ReservationKeys.parse(snap.to_dict() or {}).broker_account_id
        except MalformedDocumentError:
            return None

    def owner_of(client_order_id: str) -> Owner | None:
        return plain_owner(client_order_id) or owner_through_record(
            client_order_id, records.locate, account_of
        )

    seconds = lookback or cli.settings.reconcile_lookback_seconds
    broker = cli.broker()
    # An invocation that passed the authority just before the switch went on may still be in its
    # broker call: list only once every such call has ended, or its order is missed. The wait
    # also outlasts every cached switch read, so no intent passes the authority after it.
    settle = cli.settings.halt_settle_seconds
    with console(stderr=True).status(f"Waiting {settle:g} s for broker calls in flight to end..."):
        cli.sleep(settle)
    limit = cli.settings.sweep_deadline_seconds
    progress = f"Cancelling open orders ({run_limit(limit)})..."
    with cli.firestore_call("cancel open orders"), console().status(progress):
        # Leases read before the listing: an intent that ends after this read placed its order
        # before the listing sees it; one still reserved (slow, paused) is reported in flight.
        live = list(_live_leases(cli, scope))
        report = cancel_open_orders(
            broker,
            scope,
            since=cli.clock() - timedelta(seconds=seconds),
            owner_of=owner_of,
            deadline_seconds=limit,
        )
        note_in_flight(report, live, scope, cli.clock())
    return report


def _live_leases(cli: CliContext, scope: Scope) -> Iterator[LiveLease]:
    """The scope's `reserved` intents and until when each may still reach the broker.

    Read after `halt_settle_seconds`, when every cached switch read (`SHARED_READ_MAX_AGE_SECONDS`)
    is younger than the switch: an intent that acquires after this read sees the switch before
    its broker call. A lease may place until its expiry plus the broker call and the clock skew;
    one whose record cannot be read counts for a whole TTL from now.
    """
    settings = cli.settings
    reserved = ReservationStatus.RESERVED.value
    db = cli.db()
    if scope.tenant_id is None:
        query = reservations_by_status_query(db, reserved)
    else:
        query = tenant_reservations_query(
            db, scope.tenant_id, broker_account_id=scope.broker_account_id, status=reserved
        )
    margin = timedelta(seconds=settings.broker_call_seconds + settings.clock_skew_seconds)
    unknown = cli.clock() + timedelta(seconds=settings.reservation_ttl_seconds)
    for snap in query.stream(**cli.policy.kwargs()):
        row = ReservationRow.from_snapshot(snap)
        until = (row.expires_at or unknown) + margin
        yield LiveLease(row.tenant_id, row.broker_account_id, row.client_intent_id, until)
