"""`intent TENANT CLIENT_INTENT_ID`: one intent's whole story, and what to do next.

What it reads: the reservation (every field), the broker's order asked live by the intent's
client order id (with the broker the settings name, as the function would; `--no-broker` skips
it), the tenant's ledger entries for the intent, and the recent dead letters whose payload names
it (the newest `--scan` of them: dead letters are not indexed by intent). Nothing is written.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Annotated, Any

import typer

from execution.broker_truth import FINAL_ORDER_STATUSES, FORBIDDING_OUTCOMES
from execution.cli.context import (
    EXIT_PROBLEMS,
    CliContext,
    CliError,
    document_id,
    reports_errors,
)
from execution.cli.dead_letters import republish_steps
from execution.cli.queries import (
    DeadLetterRow,
    json_ready,
    ledger_of_intent_query,
    read_pages,
    recent_dead_letters_query,
)
from execution.cli.render import console, print_json, table
from execution.client_order_ids import client_order_id_for, parse_plain
from execution.errors import ExecutionError
from execution.firestore.placed_records import FirestorePlacedRecords
from execution.firestore.reservations import reservation_ref
from execution.models import BrokerOrder, Outcome
from execution.reservations import ReservationStatus

DEAD_LETTER_SCAN = 500


@dataclass
class BrokerLookup:
    """What the broker said about the intent's order, live."""

    asked: bool = False
    order: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class IntentStory:
    """Everything the records and the broker hold about one intent."""

    tenant_id: str
    client_intent_id: str
    reservation: dict[str, Any] | None = None
    client_order_id: str | None = None
    broker: BrokerLookup = field(default_factory=BrokerLookup)
    ledger: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    dead_letters_scanned: int = 0
    next_steps: list[str] = field(default_factory=list)

    @property
    def found(self) -> bool:
        """Whether any record of the intent, or an order of it at the broker, exists."""
        return (
            self.reservation is not None or bool(self.dead_letters) or self.broker.order is not None
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {k: json_ready(v) for k, v in asdict(self).items()}


@reports_errors
def intent(
    ctx: typer.Context,
    tenant: Annotated[
        str | None,
        typer.Argument(help="The intent's tenant_id.", callback=document_id, show_default=False),
    ] = None,
    client_intent_id: Annotated[
        str | None,
        typer.Argument(
            help="The intent's client_intent_id.", callback=document_id, show_default=False
        ),
    ] = None,
    client_order_id: Annotated[
        str | None,
        typer.Option(
            "--client-order-id",
            help="Find the intent by the client order id a broker order or an "
            "`exec.contradiction.*` line carries, instead of TENANT CLIENT_INTENT_ID.",
            show_default=False,
        ),
    ] = None,
    ask_broker: Annotated[
        bool,
        typer.Option(
            "--broker/--no-broker",
            help="Ask the broker (BROKER, APCA_API_*) for the order by its client order id.",
        ),
    ] = True,
    scan: Annotated[
        int, typer.Option(min=0, help="How many of the newest dead letters to search.")
    ] = DEAD_LETTER_SCAN,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """One intent's story: reservation, broker order, ledger, dead letters, what to do next.

    Exits 1 when no record of the intent exists, nor an order of it at the broker.
    """
    cli: CliContext = ctx.obj
    tenant, client_intent_id, account = _which_intent(
        cli, tenant, client_intent_id, client_order_id
    )
    story = read_story(
        cli, tenant, client_intent_id, ask_broker=ask_broker, scan=scan, account=account
    )
    if json_output:
        print_json(story.as_dict())
    else:
        print_story(story)
    if not story.found:
        raise typer.Exit(EXIT_PROBLEMS)


def _which_intent(
    cli: CliContext, tenant: str | None, intent_id: str | None, client_order_id: str | None
) -> tuple[str, str, str | None]:
    """(tenant_id, client_intent_id, broker_account_id where known) from the arguments."""
    if client_order_id is None:
        if tenant is None or intent_id is None:
            raise typer.BadParameter("give TENANT CLIENT_INTENT_ID, or --client-order-id")
        return tenant, intent_id, None
    if tenant is not None or intent_id is not None:
        raise typer.BadParameter(
            "give TENANT CLIENT_INTENT_ID or --client-order-id, not both",
            param_hint="--client-order-id",
        )
    plain = parse_plain(client_order_id)
    if plain is not None:
        return plain[0], plain[2], plain[1]
    with cli.firestore_call("client order id lookup"):
        located = FirestorePlacedRecords(cli.db(), policy=cli.policy).locate(client_order_id)
    if located is None:
        raise CliError(
            f"No record carries client order id {client_order_id!r}, and it does not spell out "
            "its intent (a hashed id, or not one of ours): see docs/DEPLOY.md part 16, "
            "`exec.contradiction.unrecorded_order`.",
            EXIT_PROBLEMS,
        )
    return located[0], located[1], None


def read_story(
    cli: CliContext,
    tenant_id: str,
    client_intent_id: str,
    *,
    ask_broker: bool,
    scan: int,
    account: str | None = None,
) -> IntentStory:
    """Read the intent's records, ask the broker, and decide what to do next."""
    story = IntentStory(tenant_id, client_intent_id)
    db = cli.db()
    with cli.firestore_call("intent read"):
        snap = reservation_ref(db, tenant_id, client_intent_id).get(**cli.policy.kwargs())
        story.reservation = snap.to_dict() if snap.exists else None
        story.ledger = [
            s.to_dict() or {}
            for s in ledger_of_intent_query(db, tenant_id, client_intent_id).stream(
                **cli.policy.kwargs()
            )
        ]
        story.dead_letters, story.dead_letters_scanned = _dead_letters_naming(
            cli, tenant_id, client_intent_id, scan
        )
    account = _account_of(story) or account
    if story.reservation is not None and story.reservation.get("client_order_id"):
        story.client_order_id = str(story.reservation["client_order_id"])
    elif account is not None:
        story.client_order_id = client_order_id_for(tenant_id, account, client_intent_id)
    if ask_broker and account is not None and story.client_order_id is not None:
        story.broker = _ask_broker(cli, story, account, story.client_order_id)
    story.next_steps = next_steps(story, cli.clock())
    return story


def _dead_letters_naming(
    cli: CliContext, tenant_id: str, client_intent_id: str, scan: int
) -> tuple[list[dict[str, Any]], int]:
    """The newest `scan` dead letters, kept where their payload names this intent."""
    found: list[dict[str, Any]] = []
    scanned = 0
    if scan == 0:
        return found, 0
    for snap in read_pages(recent_dead_letters_query(cli.db()), cli.policy, limit=scan):
        scanned += 1
        row = DeadLetterRow.from_snapshot(snap)
        tenant, account, intent = row.named_ids()
        if (tenant, intent) == (tenant_id, client_intent_id):
            found.append({**row.as_dict(), "broker_account_id": account})
    return found, scanned


def _account_of(story: IntentStory) -> str | None:
    for source in [story.reservation or {}, *story.dead_letters]:
        account = source.get("broker_account_id")
        if isinstance(account, str) and account:
            return account
    return None


def _ask_broker(
    cli: CliContext, story: IntentStory, account: str, client_order_id: str
) -> BrokerLookup:
    """The order by client order id, else by the recorded order id; failures are reported."""
    recorded_id = (story.reservation or {}).get("broker_order_id")
    try:
        broker = cli.broker()
        order: BrokerOrder | None = broker.get_order_by_client_order_id(
            story.tenant_id, account, client_order_id
        )
        if order is None and isinstance(recorded_id, str) and recorded_id:
            order = broker.get_order(story.tenant_id, account, recorded_id)
    except ExecutionError as exc:
        return BrokerLookup(asked=True, error=f"{type(exc).__name__}: {exc}")
    return BrokerLookup(asked=True, order=asdict(order) if order is not None else None)


# -- what to do next -------------------------------------------------------------------------


def next_steps(story: IntentStory, now: datetime) -> list[str]:
    """Plain advice from the state of the records and the broker."""
    record = story.reservation
    order = story.broker.order
    if record is None and order is not None:
        return [
            f"UNRECORDED: the broker holds order {order.get('broker_order_id')} "
            f"({order.get('status')}) under client order id {story.client_order_id}, and no "
            "reservation records it (deleted by hand, or another deployment trades with the same "
            "keys): docs/DEPLOY.md part 16, `exec.contradiction.unrecorded_order`."
        ]
    if record is None:
        if story.dead_letters:
            return [
                f"Never executed: dead-lettered ({story.dead_letters[0]['reason']}); "
                f"`dead-letters {story.dead_letters[0]['dead_letter_id']}` shows its payload.",
                *republish_steps(story.tenant_id, story.client_intent_id, None),
            ]
        return [
            "No record: the intent never reached execute_intent (check the publisher and the "
            "Pub/Sub dead-letter subscription); or it is being retried before it could reserve "
            "(a market order with no usable quote in market_quotes, a store outage: the "
            "function's log has `exec.delivery.retry` lines with the reason); or its record was "
            f"purged (purge_at). {story.dead_letters_scanned} recent dead letters were searched."
        ]
    steps = _steps_for_status(record, story, now)
    if story.dead_letters:
        steps += republish_steps(story.tenant_id, story.client_intent_id, record)
    if record.get("counted_lease_id") and record.get("status") != ReservationStatus.RESERVED.value:
        steps.append(
            f"Still counts against the account's position and daily orders (hold "
            f"{record['counted_lease_id']}): the fate of an order under its client order id is "
            "unknown. A redelivery settles it, or `reconcile` once no broker call of it can "
            "land (its lease's expiry plus BROKER_TIMEOUT_SECONDS and CLOCK_SKEW_SECONDS)."
        )
    repair = record.get("repair")
    if isinstance(repair, dict):
        steps.append(
            f"Repaired by {repair.get('found_by')} (was {repair.get('previous_outcome')}); "
            f"cancel: {repair.get('cancel')}. See docs/DEPLOY.md part 16 for `repair.cancel`."
        )
    if story.broker.error:
        steps.append(
            f"The broker could not be asked ({story.broker.error}): run again with the "
            "function's broker settings (docs/DEPLOY.md part 16)."
        )
    return steps


def _steps_for_status(record: dict[str, Any], story: IntentStory, now: datetime) -> list[str]:
    status, outcome = record.get("status"), record.get("outcome")
    order = story.broker.order
    if status == ReservationStatus.RESERVED.value:
        expires = record.get("expires_at")
        if isinstance(expires, datetime) and expires > now:
            return [f"An attempt holds the lease until {expires.isoformat()}: wait for it."]
        return [
            "The lease lapsed without a release: its invocation died. `sweep` expires it and the "
            "next delivery takes it over."
        ]
    if outcome == Outcome.PLACED.value:
        if story.broker.asked and order is None and not story.broker.error:
            return [
                f"The record says placed but the broker has no order {story.client_order_id}: "
                "run `reconcile` (missing_at_broker); check the broker account and endpoint."
            ]
        if order is not None and order.get("status") not in FINAL_ORDER_STATUSES:
            return [f"Placed; the order is still working at the broker ({order.get('status')})."]
        return ["Placed. Nothing to do."]
    if outcome in {o.value for o in FORBIDDING_OUTCOMES}:
        if order is not None:
            return [
                f"CONTRADICTION: the record says {outcome} but the broker holds order "
                f"{order.get('broker_order_id')} ({order.get('status')}): run `reconcile` now "
                "(docs/DEPLOY.md part 16)."
            ]
        return [_FINAL_ADVICE[str(outcome)].format(error=record.get("error"))]
    return [
        f"Ended `{outcome}`, which is retried: the next delivery of the message runs it again "
        "(the same client_intent_id is safe). If Pub/Sub gave up on it (the dead-letter "
        "subscription), publish the payload again."
    ]


_FINAL_ADVICE = {
    Outcome.HALTED.value: "Halted by a kill switch (final): once it is off, publish the intent "
    "again with a new client_intent_id.",
    Outcome.STALE.value: "Arrived after INTENT_MAX_AGE_SECONDS (final): publish a fresh intent "
    "with a new client_intent_id if it is still wanted.",
    Outcome.REJECTED.value: "Rejected (final): {error}. Fix the cause and publish with a new "
    "client_intent_id.",
    Outcome.DRY_RUN.value: "Dry run: nothing was sent to the broker.",
}


# -- for people ------------------------------------------------------------------------------


def print_story(story: IntentStory) -> None:
    """The story as tables (titles short: Rich folds a title to its table's width)."""
    out = console()
    out.print(f"Intent {story.client_intent_id} of tenant {story.tenant_id}", markup=False)
    record = json_ready(story.reservation) if story.reservation else {}
    out.print(table("Reservation", ("field", "value"), _fields(record)))
    if story.reservation is None:
        out.print("No reservation document.", markup=False)
    broker = story.broker
    if broker.asked:
        rows = [("client_order_id", story.client_order_id)]
        rows += _fields(json_ready(broker.order)) if broker.order else [("order", broker.error)]
        out.print(table("Broker order, asked live", ("field", "value"), rows))
    elif story.client_order_id:
        out.print(f"Broker not asked (client order id {story.client_order_id}).", markup=False)
    ledger_columns = ("broker_order_id", "symbol", "side", "qty", "recorded_at")
    out.print(
        table(
            "Ledger entries",
            ledger_columns,
            [[entry.get(k) for k in ledger_columns] for entry in story.ledger],
        )
    )
    out.print(
        table(
            f"Dead letters naming it (of the {story.dead_letters_scanned} newest)",
            ("message_id", "recorded_at", "reason"),
            [[d["message_id"], d["recorded_at"], d["reason"]] for d in story.dead_letters],
        )
    )
    for step in story.next_steps:
        out.print(f"Next: {step}", markup=False)


def _fields(document: dict[str, Any]) -> list[tuple[str, Any]]:
    return [
        (name, json.dumps(value) if isinstance(value, dict | list) else value)
        for name, value in sorted(document.items())
    ]
