"""`python -m execution dead-letters [ID]`: why a delivery was refused and how to republish it.

Deliveries go through `main.answer_delivery` with the real service on this module's emulator
project (paper broker, counted): an invalid payload is dead-lettered as in production, the
operator reads it with the command line, publishes the corrected payload under the same
client_intent_id, and the original delivered again never places a second order.
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
from execution.bootstrap import Service
from execution.brokers.paper import PaperBroker
from execution.cli.context import EXIT_PROBLEMS
from execution.clock import system_clock
from execution.intake import Delivery
from tests.support.builders import (
    FAST_POLICY,
    CountingBroker,
    emulator_service,
    ledger_entries,
    unique,
)
from tests.support.cli import emulator_cli


@pytest.fixture
def cli(firestore_emulator_host: str, firestore_project: str) -> Callable[..., Result]:
    """Run `python -m execution --project <this module's project> ARGS` in-process."""

    return emulator_cli(firestore_project)


def intent_payload() -> dict[str, Any]:
    return {
        "tenant_id": unique("tenant"),
        "broker_account_id": "acct-1",
        "client_intent_id": unique("intent"),
        "symbol": "AAPL",
        "side": "buy",
        "qty": 2,
        "order_type": "limit",
        "limit_price": 100.0,
        "created_at": datetime.now(UTC).isoformat(),
    }


def deliver(service: Service, message_id: str, payload: dict[str, Any]) -> None:
    data = json.dumps(payload).encode()
    main.answer_delivery(service, Delivery(message_id, datetime.now(UTC), data, {}))


def letter(cli: Callable[..., Result], wanted: str) -> dict[str, Any]:
    result = cli("dead-letters", wanted, "--json")
    assert result.exit_code == 0, result.output
    told: dict[str, Any] = json.loads(result.stdout)
    return told


def test_a_corrected_intent_republished_under_its_own_id_places_one_order_whatever_comes_again(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    broker = CountingBroker(PaperBroker(db, clock=system_clock, policy=FAST_POLICY))
    service = emulator_service(db, system_clock, broker=broker)
    payload = intent_payload()
    original = {**payload, "qty": "2"}  # a string: never coerced, dead-lettered
    first, corrected, again = unique("msg"), unique("msg"), unique("msg")

    deliver(service, first, original)
    before = letter(cli, first)
    deliver(service, corrected, payload)
    deliver(service, again, original)  # the original, delivered again
    after = letter(cli, again)

    assert "qty" in before["dead_letter"]["reason"] and before["record"] is None
    assert "SAME client_intent_id" in before["next_steps"][0]
    assert after["record"]["outcome"] == "placed"
    assert "Do not publish it again under a new client_intent_id" in after["next_steps"][0]
    assert broker.place_calls == 1
    tenant, intent_id = payload["tenant_id"], payload["client_intent_id"]
    assert len(ledger_entries(db, tenant, intent_id)) == 1


def test_a_letter_shows_its_reason_and_its_payload_as_it_arrived(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    payload = {**intent_payload(), "side": "hold"}
    message_id = unique("msg")
    deliver(emulator_service(db, system_clock), message_id, payload)

    result = cli("dead-letters", message_id)

    assert result.exit_code == 0, result.output
    assert "side" in result.stdout and '"side": "hold"' in result.stdout
    assert f"No record of {payload['tenant_id']}/{payload['client_intent_id']}" in result.stdout


def test_a_letter_is_found_by_a_message_id_that_is_not_a_document_id(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    message_id = f"{unique('msg')}/with-a-slash"
    deliver(emulator_service(db, system_clock), message_id, {"not": "an intent"})

    told = letter(cli, message_id)

    assert told["dead_letter"]["message_id"] == message_id
    assert told["dead_letter"]["dead_letter_id"].startswith("msg-")
    assert "names no valid tenant_id" in told["next_steps"][0]


def test_the_list_names_each_letters_intent_and_id(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    payload = {**intent_payload(), "qty": -1}
    message_id = unique("msg")
    deliver(emulator_service(db, system_clock), message_id, payload)

    result = cli("dead-letters", "--recent", "50", "--json")

    assert result.exit_code == 0, result.output
    rows = {row["message_id"]: row for row in json.loads(result.stdout)}
    assert rows[message_id]["names"] == f"{payload['tenant_id']}/{payload['client_intent_id']}"


def test_an_unknown_letter_exits_1(cli: Callable[..., Result]) -> None:
    result = cli("dead-letters", unique("no-such-message"))

    assert result.exit_code == EXIT_PROBLEMS
