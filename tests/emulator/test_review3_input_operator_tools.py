"""Third review: the operator's command line on what hostile deliveries and writers left behind.

Deliveries go through `main.answer_delivery` with the real service on this module's emulator
project, so each dead letter is what production would store; documents an operator or a
compromised writer can edit are written with the server client. Then `python -m execution ...`
runs in-process (`CliRunner`) against the same emulator. What a reviewer tried: a dead letter
whose payload is JSON nested past Python's recursion limit (exactly what the intake dead-letters
for nesting) under `dead-letters`, `dead-letters ID` and `intent`, which read every recent letter;
a payload that names its ids twice; a stray `ops/execution_kill_switch` under another parent than
`tenants/{t}`; and terminal control sequences in every field a dead letter shows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from google.cloud import firestore
from typer.testing import Result

import main
from execution.clock import system_clock
from execution.intake import Delivery
from tests.support import events
from tests.support.builders import emulator_service, unique
from tests.support.cli import emulator_cli

NESTING = 5000
"""Far past Python's recursion limit (1000), far inside the dead letter's 100 kB excerpt."""
TERMINAL_CONTROLS = ("\x1b", "\x07", "\x9b", "\r", "\u202e", "\u2066")
"""ESC (CSI, OSC 52 clipboard writes, screen clears), BEL, the 8-bit CSI, a carriage return
that overwrites the line, and bidi overrides that reorder what the operator reads."""


@pytest.fixture
def cli(firestore_emulator_host: str, firestore_project: str) -> Callable[..., Result]:
    """Run `python -m execution --project <this module's project> ARGS` in-process."""

    return emulator_cli(firestore_project)


def intent_payload() -> dict[str, Any]:
    """A valid limit buy of a tenant of its own, created now."""
    return events.intent_payload(unique("tenant"), created_at=datetime.now(UTC).isoformat())


def deliver(
    db: firestore.Client, data: bytes, message_id: str | None = None, **attributes: str
) -> str:
    """Deliver `data` through the entry point's answer, as production would; the message id."""
    message_id = message_id or unique("msg")
    delivery = Delivery(message_id, datetime.now(UTC), data, dict(attributes))
    main.answer_delivery(emulator_service(db, system_clock), delivery)
    return message_id


def nested_payload(tenant_id: str, client_intent_id: str) -> bytes:
    """An intent whose metadata is nested `NESTING` deep: refused for its nesting."""
    head = json.dumps({"tenant_id": tenant_id, "client_intent_id": client_intent_id})[:-1]
    return (head + ', "metadata": ' + "[" * NESTING + "]" * NESTING + "}").encode()


def assert_ran(result: Result) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.exit_code == 0, result.output[-2000:]


# -- a dead letter nested past the recursion limit ----------------------------------------------


def test_the_dead_letter_list_reads_a_letter_nested_past_the_recursion_limit(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    message_id = deliver(db, nested_payload(unique("tenant"), unique("intent")))

    result = cli("dead-letters", "--recent", "50", "--json")

    assert_ran(result)
    rows = {row["message_id"]: row for row in json.loads(result.stdout)}
    assert "nested too deeply" in rows[message_id]["reason"]


def test_a_dead_letter_nested_past_the_recursion_limit_is_shown_in_full(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    message_id = deliver(db, nested_payload(unique("tenant"), unique("intent")))

    shown = cli("dead-letters", message_id)
    as_json = cli("dead-letters", message_id, "--json")

    assert_ran(shown)
    assert_ran(as_json)
    assert "nested too deeply" in json.loads(as_json.stdout)["dead_letter"]["reason"]


def test_the_story_of_an_intent_is_told_beside_a_letter_nested_past_the_recursion_limit(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    payload = intent_payload()
    tenant, intent = payload["tenant_id"], payload["client_intent_id"]
    deliver(db, nested_payload(unique("tenant"), unique("intent")))  # another intent's letter
    deliver(db, json.dumps(payload).encode())  # placed

    result = cli("intent", tenant, intent, "--json")

    assert_ran(result)
    assert json.loads(result.stdout)["reservation"]["outcome"] == "placed"


# -- a payload that names its ids twice -----------------------------------------------------------


def test_a_letter_whose_payload_names_its_tenant_twice_names_no_intent(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    # The intake refused it for the repeated key: which tenant the publisher meant is a guess,
    # so the command line must not guess either (the last one, here another tenant's intent).
    victim = intent_payload()
    deliver(db, json.dumps(victim).encode())
    tenant, intent = victim["tenant_id"], victim["client_intent_id"]
    data = (
        f'{{"tenant_id": "someone-else", "tenant_id": "{tenant}", "client_intent_id": "{intent}"}}'
    )
    data_bytes = data.encode()
    message_id = deliver(db, data_bytes)

    told = cli("dead-letters", message_id, "--json")

    assert_ran(told)
    story = json.loads(told.stdout)
    assert "written more than once" in story["dead_letter"]["reason"]
    assert (story["tenant_id"], story["client_intent_id"], story["record"]) == (None, None, None)


# -- terminal control sequences in every field a dead letter shows --------------------------------


def test_a_dead_letter_shows_terminal_controls_escaped_never_run(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    hostile = "\x1b]52;c;cm0gLXJmIH4K\x07\x1b[2J\r\u202eKCOT\u2066\x9b31m"
    data = ('{"note": "' + hostile + '"}').encode()  # raw controls: not JSON, dead-lettered
    message_id = deliver(db, data, **{hostile: hostile})

    listed = cli("dead-letters", "--recent", "50")
    shown = cli("dead-letters", message_id)
    as_json = cli("dead-letters", message_id, "--json")

    for result in (listed, shown, as_json):
        assert_ran(result)
        assert not [c for c in TERMINAL_CONTROLS if c in result.stdout], result.stdout[-500:]
    assert "\\x1b]52" in shown.stdout
    assert json.loads(as_json.stdout)["dead_letter"]["data"] == data.decode()


# -- a stray kill-switch document -----------------------------------------------------------------


def test_a_kill_switch_document_outside_a_tenant_is_not_listed_as_that_tenants_switch(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    # The service reads `tenants/{t}/ops/execution_kill_switch` only: a document of that id
    # under any other parent halts nothing, so showing it as tenant t's switch misleads.
    tenant = unique("tenant")
    stray = {"enabled": True, "reason": "stray", "updated_by": "someone"}
    db.document(f"elsewhere/{tenant}/ops/execution_kill_switch").set(stray)
    db.document(f"tenants/x/accounts/{tenant}/ops/execution_kill_switch").set(stray)

    listed = cli("kill-switch", "status", "--json")
    status = cli("status", "--json")

    assert_ran(listed)
    assert_ran(status)
    scopes = [row["tenant_id"] for row in json.loads(listed.stdout)]
    assert tenant not in scopes
    assert tenant not in status.stdout


def test_a_record_copied_under_another_tenant_lists_as_misplaced_never_as_its_fields_say(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    # The service reads a record by its path; a copy under tenant B of tenant A's record (by
    # hand, or by a writer of B's documents) must not show A's intent in B's listing, nor A's
    # tenant in a listing of every tenant.
    payload = intent_payload()
    deliver(db, json.dumps(payload).encode())
    tenant_a, intent = payload["tenant_id"], payload["client_intent_id"]
    original = db.document(f"tenants/{tenant_a}/execution_reservations/{intent}").get()
    tenant_b = unique("tenant")
    db.document(f"tenants/{tenant_b}/execution_reservations/{intent}").set(original.to_dict())

    listed = cli("reservations", "--tenant", tenant_b, "--json")
    every = cli("reservations", "--status", "released", "--limit", "1000", "--json")

    assert_ran(listed)
    assert_ran(every)
    [row] = json.loads(listed.stdout)
    assert (row["tenant_id"], row["problem"]) == (
        tenant_b,
        "its tenant_id or client_intent_id field disagrees with its path",
    )
    by_path = {row["path"]: row for row in json.loads(every.stdout)}
    assert by_path[original.reference.path]["problem"] is None
    copy = by_path[f"tenants/{tenant_b}/execution_reservations/{intent}"]
    assert copy["tenant_id"] == tenant_b and copy["problem"] is not None


# -- a record holding a field of most of a megabyte -----------------------------------------------


def test_a_field_of_most_of_a_megabyte_is_shown_cut_and_escaped_and_whole_in_json(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    # Before: `intent` printed 10.5 MB (40 s) and `status` 10.6 MB for this one record, each
    # line break in it drawing a table row of its own.
    payload = intent_payload()
    deliver(db, json.dumps(payload).encode())
    tenant, intent = payload["tenant_id"], payload["client_intent_id"]
    huge = "E\n\u202e\x1b[2J" * 50_000 + "x" * 400_000
    db.document(f"tenants/{tenant}/execution_reservations/{intent}").update({"error": huge})

    story = cli("intent", tenant, intent)
    status = cli("status", "--tenant", tenant)
    as_json = cli("intent", tenant, intent, "--json")

    for result in (story, status):
        assert_ran(result)
        assert len(result.stdout) < 50_000
        assert not [c for c in TERMINAL_CONTROLS if c in result.stdout]
    assert f"[cut: {len(huge)} characters]" in story.stdout
    assert "E\\n\\u202e\\x1b[2J" in story.stdout
    assert_ran(as_json)
    assert json.loads(as_json.stdout)["reservation"]["error"] == huge


# -- a letter looked up by a message id that is no document id ----------------------------------


@pytest.mark.parametrize(
    "shape",
    ["__reserved__", "2000 characters", "\x1b[2J and a line\nbreak", "a/slash"],
)
def test_a_letter_is_found_by_any_message_id_it_was_delivered_under(
    cli: Callable[..., Result], db: firestore.Client, shape: str
) -> None:
    # Before: `dead-letters __reserved__` and a 2000-character id crashed with Firestore's
    # InvalidArgument (a reserved document id; a query value past 1500 bytes).
    marker = unique("m")
    message_id = {
        "__reserved__": f"__{marker}__",
        "2000 characters": marker + "x" * 2000,
        "\x1b[2J and a line\nbreak": f"{marker}\x1b[2J\n",
        "a/slash": f"{marker}/x",
    }[shape]
    deliver(db, b"{not json", message_id)

    told = cli("dead-letters", message_id, "--json")

    assert_ran(told)
    assert "not JSON" in json.loads(told.stdout)["dead_letter"]["reason"]


@pytest.mark.parametrize("wanted", ["__x__", "y" * 2000, "\ud800", "\x00"])
def test_no_letter_under_an_id_firestore_refuses_is_answered_as_not_found(
    cli: Callable[..., Result], wanted: str
) -> None:
    result = cli("dead-letters", wanted)

    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 1
