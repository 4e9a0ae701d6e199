"""`sweep`: run the sweeper now (the same `Sweeper` the scheduled function runs), or preview it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from execution.cli.context import EXIT_PROBLEMS, CliContext, reports_errors
from execution.cli.render import age, console, print_json, run_limit, table
from execution.firestore.sweeper_store import FirestoreExpiredLeases
from execution.sweeper import ExpiredLease, FoundLease, Sweeper, SweepReport

PAGE_SIZE = 200


@reports_errors
def sweep(
    ctx: typer.Context,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only list what would be expired; change nothing.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Expire reservations whose lease lapsed without a release (their invocation died).

    Stops at SWEEP_DEADLINE_SECONDS. Exits 1 when a document could not be expired or the run
    was incomplete (run it again).
    """
    cli: CliContext = ctx.obj
    store = FirestoreExpiredLeases(cli.db(), policy=cli.policy)
    if dry_run:
        _preview(cli, store, json_output=json_output)
        return
    limit = cli.settings.sweep_deadline_seconds
    sweeper = Sweeper(store, clock=cli.clock, page_size=PAGE_SIZE, deadline_seconds=limit)
    progress = f"Sweeping lapsed leases ({run_limit(limit)})..."
    with cli.firestore_call("sweep"), console().status(progress):
        report = sweeper.sweep(cli.clock())
    if json_output:
        print_json(report.as_dict())
    else:
        _print_report(report, limit)
    if report.errors or not report.complete:
        raise typer.Exit(EXIT_PROBLEMS)


def _preview(cli: CliContext, store: FirestoreExpiredLeases, *, json_output: bool) -> None:
    """List what a sweep would expire now, changing nothing."""
    now = cli.clock()
    out = console()
    with cli.firestore_call("sweep preview"), out.status("Looking for lapsed leases..."):
        leases = _all_expired(store, now)
    if json_output:
        print_json(
            {
                "dry_run": True,
                "would_expire": len(leases),
                "leases": [
                    {
                        "path": lease.path,
                        "tenant_id": lease.tenant_id,
                        "broker_account_id": lease.broker_account_id,
                        "client_intent_id": lease.client_intent_id,
                        "attempt": lease.attempt,
                        "expires_at": lease.expires_at.isoformat(),
                    }
                    for lease in leases
                ],
            }
        )
        return
    if leases:
        out.print(
            table(
                "Would expire (dry run: nothing changed)",
                ("tenant", "account", "client_intent_id", "attempt", "lapsed for"),
                (
                    (
                        lease.tenant_id,
                        lease.broker_account_id,
                        lease.client_intent_id,
                        lease.attempt,
                        age((now - lease.expires_at).total_seconds()),
                    )
                    for lease in leases
                ),
            )
        )
    out.print(f"Dry run: {len(leases)} lapsed lease(s) would be expired.", markup=False)


def _print_report(report: SweepReport, limit: float) -> None:
    out = console()
    out.print(
        table(
            "Sweep report",
            ("scanned", "expired", "skipped", "errors", "oldest lapsed", "complete"),
            [
                (
                    report.scanned,
                    report.expired,
                    report.skipped,
                    report.errors,
                    age(report.oldest_age_seconds) if report.oldest_age_seconds is not None else "",
                    "yes"
                    if report.complete
                    else f"no (stopped at its {limit:g} s limit; run again)",
                )
            ],
        )
    )
    for path in report.expired_ids:
        out.print(f"expired {path}", markup=False)
    for path in report.error_ids:
        out.print(f"error   {path} (unreadable or not written; see the logs)", markup=False)


def _all_expired(store: FirestoreExpiredLeases, now: datetime) -> list[ExpiredLease]:
    """Every readable lapsed lease (the sweep itself reports the unreadable ones in `errors`)."""
    leases: list[ExpiredLease] = []
    after: FoundLease | None = None
    while True:
        page = store.find_expired(now, limit=PAGE_SIZE, after=after)
        leases.extend(found for found in page if isinstance(found, ExpiredLease))
        if len(page) < PAGE_SIZE:
            return leases
        after = page[-1]
