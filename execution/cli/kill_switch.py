"""`kill-switch on|off|status`: the global or a tenant's switch, with who and why on the document.

Documents (contract): `ops/execution_kill_switch` and
`tenants/{tenant_id}/ops/execution_kill_switch`, `{enabled, reason, updated_by, updated_at}`.
The engine reads them right before the broker call.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from execution.cli.context import CliContext, default_operator, document_id, reports_errors
from execution.cli.queries import KillSwitchRow, kill_switch_ref, kill_switches_query
from execution.cli.render import console, on_off, print_json, relative, table
from execution.firestore.switches import KILL_SWITCH

app = typer.Typer(
    help="Halt execution globally or for one tenant, resume it, or show the switches.",
    no_args_is_help=True,
)

TenantOption = Annotated[
    str | None,
    typer.Option(help="The tenant's switch (default: the global one).", callback=document_id),
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
    by: ByOption = None,
    json_output: JsonOption = False,
) -> None:
    """Halt execution: intents reaching the broker stage end as `halted`."""
    cli: CliContext = ctx.obj
    if not reason.strip():
        raise typer.BadParameter("say why execution is halted", param_hint="--reason")
    row = _write(cli, tenant, enabled=True, reason=reason, by=by)
    if json_output:
        print_json(row.as_dict())
        return
    out = console()
    out.print(
        f"Kill switch ON for {row.scope} ({row.path}) by {row.updated_by}: {reason}", markup=False
    )
    out.print(
        "Intents delivered while it is on end as `halted`, a final outcome: they are not "
        "executed when it goes off (publish them again with new client_intent_ids).",
        markup=False,
    )


@app.command("off")
@reports_errors
def switch_off(
    ctx: typer.Context,
    reason: Annotated[
        str | None, typer.Option(help="Why execution may resume (stored on the document).")
    ] = None,
    tenant: TenantOption = None,
    by: ByOption = None,
    json_output: JsonOption = False,
) -> None:
    """Resume execution (the other switches, and EXECUTION_HALTED, still apply)."""
    cli: CliContext = ctx.obj
    row = _write(cli, tenant, enabled=False, reason=reason, by=by)
    if json_output:
        print_json(row.as_dict())
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
    """Show the global switch and every tenant switch that exists."""
    cli: CliContext = ctx.obj
    rows = read_switches(cli, tenant)
    if json_output:
        print_json([row.as_dict() for row in rows])
        return
    console().print(switches_table(rows, cli))


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
            if snap.id == KILL_SWITCH and snap.reference.parent.parent is not None
        ]
    tenant_rows.sort(key=lambda row: row.tenant_id or "")
    return [KillSwitchRow.from_snapshot(global_snap), *tenant_rows]


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
    cli: CliContext, tenant: str | None, *, enabled: bool, reason: str | None, by: str | None
) -> KillSwitchRow:
    db = cli.db()
    ref = kill_switch_ref(db, tenant)
    fields = {
        "enabled": enabled,
        "reason": reason,
        "updated_by": by or default_operator(cli.environ),
        "updated_at": cli.clock(),
    }
    with cli.firestore_call("kill switch write"):
        # merge: fields an operator keeps on the document (a ticket link...) survive.
        ref.set(fields, merge=True, **cli.policy.kwargs())
    parent = ref.parent.parent
    return KillSwitchRow(
        path=ref.path,
        tenant_id=parent.id if parent is not None else None,
        enabled=enabled,
        reason=reason,
        updated_by=str(fields["updated_by"]),
        updated_at=cli.clock(),
    )
