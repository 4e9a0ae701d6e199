"""`dead-letters [ID]`: what could never execute, why, and how to publish it again safely.

A dead letter (`execution_dead_letters/{id}`) is a delivery the function refused for good and
acked: nothing of it reached a broker. Without an ID the newest are listed with the intent each
names; with one (the document id, or the message id) the whole letter is shown — its reason, its
payload — beside the record of the intent it names, and the safe way to publish it again.

Safe means one order at most for the trade. The `client_intent_id` is what makes a second order
impossible (one reservation per id, one broker client order id per id), so a corrected payload
goes out under the SAME id when that id has no record; where it has one, the id already ran
(or runs) and a new id would be a second order for it. Nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

import typer

from execution.cli.context import EXIT_PROBLEMS, CliContext, reports_errors
from execution.cli.queries import (
    DeadLetterRow,
    dead_letter_by_message_query,
    json_ready,
    recent_dead_letters_query,
)
from execution.cli.render import console, print_json, relative, table, when
from execution.firestore.paths import dead_letter_ref
from execution.firestore.reservations import reservation_ref
from execution.intake import message_label
from execution.models import validate_document_id

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


@dataclass
class LetterStory:
    """One dead letter, the record of the intent it names, and what to do."""

    letter: DeadLetterRow
    tenant_id: str | None
    broker_account_id: str | None
    client_intent_id: str | None
    record: dict[str, Any] | None = None
    next_steps: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "dead_letter": self.letter.as_dict(),
            "tenant_id": self.tenant_id,
            "broker_account_id": self.broker_account_id,
            "client_intent_id": self.client_intent_id,
            "record": json_ready(self.record),
            "next_steps": self.next_steps,
        }


@reports_errors
def dead_letters(
    ctx: typer.Context,
    dead_letter_id: Annotated[
        str | None,
        typer.Argument(
            help="Show this one in full (its id as listed, or its Pub/Sub message id).",
            show_default=False,
        ),
    ] = None,
    recent: Annotated[int, typer.Option(min=1, help="How many of the newest to list.")] = 20,
    json_output: JsonOption = False,
) -> None:
    """List the newest dead letters, or show one with its payload and how to republish it.

    Exits 1 when the ID names no dead letter.
    """
    cli: CliContext = ctx.obj
    if dead_letter_id is None:
        _list(cli, recent, json_output)
        return
    story = read_letter(cli, dead_letter_id)
    if story is None:
        console(stderr=True).print(
            f"No dead letter {dead_letter_id!r}: list them with `dead-letters`.", markup=False
        )
        raise typer.Exit(EXIT_PROBLEMS)
    if json_output:
        print_json(story.as_dict())
    else:
        _print_letter(story)


def _list(cli: CliContext, recent: int, json_output: bool) -> None:
    with cli.firestore_call("dead letters read"):
        rows = [
            DeadLetterRow.from_snapshot(snap)
            for snap in recent_dead_letters_query(cli.db())
            .limit(recent)
            .stream(**cli.policy.kwargs())
        ]
    if json_output:
        print_json([{**row.as_dict(), "names": _names(row)} for row in rows])
        return
    out = console()
    now = cli.clock()
    out.print(
        table(
            "Dead letters, newest first (never executed)",
            ("recorded", "id", "intent (tenant/client_intent_id)", "reason"),
            (
                (
                    relative(row.recorded_at, now),
                    row.dead_letter_id,
                    _names(row) or "(names none)",
                    row.reason,
                )
                for row in rows
            ),
        )
    )
    if rows:
        out.print("Read one, with its payload and how to publish it again: `dead-letters ID`.")


def _names(row: DeadLetterRow) -> str | None:
    tenant, _account, intent = row.named_ids()
    return f"{tenant}/{intent}" if tenant and intent else None


def read_letter(cli: CliContext, wanted: str) -> LetterStory | None:
    """The dead letter by document id or message id, and the record of the intent it names."""
    db = cli.db()
    with cli.firestore_call("dead letter read"):
        snap = dead_letter_ref(db, wanted).get(**cli.policy.kwargs()) if _is_id(wanted) else None
        if snap is None or not snap.exists:
            # As the letter stores it: a message id that is no document id (`__x__`, 2000
            # characters, a control character) is still found, and never sent raw in a query.
            by_message = dead_letter_by_message_query(db, message_label(wanted)).limit(1)
            snap = next(iter(by_message.stream(**cli.policy.kwargs())), None)
        if snap is None or not snap.exists:
            return None
        letter = DeadLetterRow.from_snapshot(snap)
        tenant, account, intent = letter.named_ids()
        story = LetterStory(letter, tenant, account, intent)
        if tenant and intent:
            record = reservation_ref(db, tenant, intent).get(**cli.policy.kwargs())
            story.record = record.to_dict() if record.exists else None
    story.next_steps = republish_steps(tenant, intent, story.record)
    return story


def _is_id(value: str) -> bool:
    """Whether `value` can name a letter's document: every id a letter is written under can
    (`Delivery.dead_letter_id`); anything else (`__x__`, past 1500 bytes, a lone surrogate)
    would be refused by Firestore as a request, not answered as absent."""
    try:
        validate_document_id(value)
    except ValueError:
        return False
    return True


def republish_steps(
    tenant_id: str | None, client_intent_id: str | None, record: dict[str, Any] | None
) -> list[str]:
    """How to publish a dead-lettered intent again without a second order for it."""
    if not (tenant_id and client_intent_id):
        return [
            "The payload names no valid tenant_id and client_intent_id: find the intent at its "
            "publisher (data_sha256 identifies the payload) and publish it corrected under the "
            "client_intent_id the publisher gave it, so that it can run once at most."
        ]
    if record is None:
        return [
            f"No record of {tenant_id}/{client_intent_id}: it never executed. Publish the "
            "corrected payload with the SAME client_intent_id (`trade-exec publish FILE`, "
            "checked before it is sent): one reservation and one broker order per id, so the "
            "original, delivered again, is refused and never places a second order. A new id "
            "for the same trade would risk two orders."
        ]
    outcome = record.get("outcome") or record.get("status")
    order = record.get("broker_order_id")
    return [
        f"{tenant_id}/{client_intent_id} already has a record ({outcome}"
        + (f", order {order}" if order else "")
        + "): this payload reused an id that ran (or runs), and was not executed. Do not "
        "publish it again under a new client_intent_id unless it is a separate trade: that "
        f"would be a second order beside it. Its story: `trade-exec intent {tenant_id} "
        f"{client_intent_id}`."
    ]


def _print_letter(story: LetterStory) -> None:
    out = console()
    letter = story.letter
    rows: list[tuple[str, Any]] = [
        ("id", letter.dead_letter_id),
        ("message_id", letter.message_id),
        ("recorded_at", when(letter.recorded_at)),
        ("reason", letter.reason),
        ("tenant_id", story.tenant_id),
        ("broker_account_id", story.broker_account_id),
        ("client_intent_id", story.client_intent_id),
        ("record of that intent", _record_line(story)),
    ]
    out.print(table("Dead letter (never executed)", ("field", "value"), rows))
    out.print("Payload, as it arrived:", markup=False)
    out.print(letter.data, markup=False, highlight=False)
    for step in story.next_steps:
        out.print(f"Next: {step}", markup=False)


def _record_line(story: LetterStory) -> str:
    if not (story.tenant_id and story.client_intent_id):
        return "(no valid ids to look it up)"
    record = story.record
    if record is None:
        return "none"
    return f"status {record.get('status')}, outcome {record.get('outcome')}"
