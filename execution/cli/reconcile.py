"""`reconcile`: compare the broker's recent orders with the records now (what the scheduled
`reconcile_orders` function runs), repair what is certain and report the rest."""

from __future__ import annotations

from typing import Annotated

import typer

from execution.bootstrap import bootstrap
from execution.cli.context import EXIT_PROBLEMS, CliContext, reports_errors
from execution.cli.render import console, print_json, run_limit, table


@reports_errors
def reconcile(
    ctx: typer.Context,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Settle every recent broker order of ours with its record; list what disagrees.

    Uses the broker the settings name (BROKER, APCA_API_*), over RECONCILE_LOOKBACK_SECONDS,
    within SWEEP_DEADLINE_SECONDS. Exits 1 when anything disagrees or the run was incomplete.
    """
    cli: CliContext = ctx.obj
    service = bootstrap(cli.settings, db=cli.db())
    out = console()
    limit = run_limit(cli.settings.sweep_deadline_seconds)
    progress = f"Comparing broker orders with records ({limit})..."
    with cli.firestore_call("reconcile"), out.status(progress):
        report = service.reconciler.reconcile()
    if json_output:
        print_json(report.as_dict())
    else:
        out.print(
            table(
                f"Reconcile report (orders since {report.since})",
                (
                    "listed",
                    "ours",
                    "agreed",
                    "repaired",
                    "pending",
                    "placed records",
                    "holds placed/released/pending",
                    "fates settled",
                    "closed unfilled",
                    "complete",
                ),
                [
                    (
                        report.listed,
                        report.ours,
                        report.agreed,
                        report.repaired,
                        report.pending,
                        report.placed_records,
                        f"{report.holds_placed}/{report.holds_released}/{report.holds_pending}",
                        report.fates_settled,
                        report.closed_unfilled,
                        "yes" if report.complete else "no (see errors; run again)",
                    )
                ],
            )
        )
        for line in [*report.conflicts, *report.missing_at_broker, *report.errors]:
            out.print(line, markup=False)
    if report.conflicts or report.missing_at_broker or not report.complete:
        raise typer.Exit(EXIT_PROBLEMS)
