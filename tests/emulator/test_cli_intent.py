"""`python -m execution intent TENANT CLIENT_INTENT_ID`: one intent's story, on the emulator.

Intents run through the real engine (paper broker on this module's Firestore project); the
command then reads the same project with its own clients and asks the paper broker live, as an
operator on call would.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from google.cloud import firestore
from typer.testing import CliRunner, Result

from devtools.alpaca_sandbox import KEY_ID, SECRET_KEY, AlpacaSandbox, status
from execution.brokers.paper import PaperBroker
from execution.cli import app
from execution.cli.context import EXIT_PROBLEMS, EXIT_USAGE
from execution.client_order_ids import client_order_id_for
from execution.clock import system_clock
from execution.errors import BrokerTransientError
from execution.firestore.dead_letters import FirestoreDeadLetters
from execution.firestore.support import CallPolicy
from execution.intake import Delivery
from execution.models import Outcome, TradeIntent
from tests.support.builders import (
    client_order_id_of,
    emulator_service,
    fast_settings,
    make_intent,
    make_order_request,
    unique,
)

WIDE = {"COLUMNS": "250"}
PATIENT = CallPolicy(timeout_seconds=10.0)
"""The default store deadline: a loaded machine's emulator may take seconds to answer."""


@pytest.fixture
def cli(firestore_emulator_host: str, firestore_project: str) -> Callable[..., Result]:
    """Run `python -m execution --project <this module's project> ARGS` in-process."""

    def run(*args: str) -> Result:
        return CliRunner().invoke(app, ["--project", firestore_project, *args], env=WIDE)

    return run


def story(cli: Callable[..., Result], intent: TradeIntent, *extra: str) -> dict[str, Any]:
    result = cli("intent", intent.tenant_id, intent.client_intent_id, "--json", *extra)
    assert result.exit_code == 0, result.output
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded


def executed(db: firestore.Client, **overrides: Any) -> TradeIntent:
    """An intent the real engine has run to its end."""
    intent = make_intent(tenant_id=unique("tenant"), created_at=datetime.now(UTC), **overrides)
    settings = fast_settings(firestore_timeout_seconds=PATIENT.timeout_seconds)
    broker = PaperBroker(db, clock=system_clock, policy=PATIENT)
    emulator_service(db, system_clock, settings=settings, broker=broker).engine.execute_intent(
        intent
    )
    return intent


def test_a_placed_intent_shows_its_whole_record_the_broker_order_asked_live_and_its_ledger(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    intent = executed(db)

    told = story(cli, intent)

    record = told["reservation"]
    assert (record["status"], record["outcome"], record["attempt"]) == ("released", "placed", 1)
    assert {"lease_id", "created_at", "expires_at", "released_at", "payload_hash"} <= set(record)
    assert told["client_order_id"] == record["client_order_id"] == client_order_id_of(intent)
    assert told["broker"]["asked"] is True
    assert told["broker"]["order"]["client_order_id"] == client_order_id_of(intent)
    assert told["broker"]["order"]["broker_order_id"] == record["broker_order_id"]
    assert [e["broker_order_id"] for e in told["ledger"]] == [record["broker_order_id"]]
    assert told["dead_letters"] == []
    assert told["next_steps"] == ["Placed. Nothing to do."]


def test_without_the_broker_option_nothing_is_asked_of_the_broker(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    intent = executed(db)

    told = story(cli, intent, "--no-broker")

    assert told["broker"] == {"asked": False, "order": None, "error": None}
    assert told["client_order_id"] == client_order_id_of(intent)


def test_an_order_the_record_forbids_is_told_as_a_contradiction(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    intent = executed(db, dry_run=True)
    late = PaperBroker(db, clock=system_clock, policy=PATIENT).place_order(
        make_order_request(
            tenant_id=intent.tenant_id,
            broker_account_id=intent.broker_account_id,
            client_order_id=client_order_id_of(intent),
        )
    )

    told = story(cli, intent)

    assert told["reservation"]["outcome"] == Outcome.DRY_RUN.value
    assert told["broker"]["order"]["broker_order_id"] == late.broker_order_id
    [step] = told["next_steps"]
    assert step.startswith("CONTRADICTION: the record says dry_run")
    assert "reconcile" in step


def test_a_dead_lettered_payload_is_found_by_the_ids_it_names(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    tenant, intent_id = unique("tenant"), unique("intent")
    payload = {"tenant_id": tenant, "broker_account_id": "acct-9", "client_intent_id": intent_id}
    FirestoreDeadLetters(db, clock=system_clock, policy=PATIENT).record(
        Delivery(unique("msg"), None, json.dumps({**payload, "qty": -1}).encode(), {}),
        "InvalidIntentError: qty must be > 0",
    )

    result = cli("intent", tenant, intent_id, "--json")

    assert result.exit_code == 0, result.output
    told = json.loads(result.stdout)
    assert told["reservation"] is None
    [dead] = told["dead_letters"]
    assert dead["reason"] == "InvalidIntentError: qty must be > 0"
    assert told["broker"]["asked"] is True and told["broker"]["order"] is None
    assert told["next_steps"][0].startswith("Never executed: dead-lettered")
    assert "with the SAME client_intent_id" in told["next_steps"][1]


def test_an_intent_with_no_record_anywhere_exits_1_saying_where_to_look(
    cli: Callable[..., Result],
) -> None:
    result = cli("intent", unique("tenant"), unique("intent"), "--json")

    assert result.exit_code == EXIT_PROBLEMS
    [step] = json.loads(result.stdout)["next_steps"]
    assert step.startswith("No record") and "exec.delivery.retry" in step


def test_the_table_shows_the_record_the_order_and_the_next_step(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    intent = executed(db)

    result = cli("intent", intent.tenant_id, intent.client_intent_id)

    assert result.exit_code == 0, result.output
    assert client_order_id_of(intent) in result.stdout
    assert "Broker order, asked live" in result.stdout
    assert "Next: Placed. Nothing to do." in result.stdout


def test_a_broker_that_does_not_answer_is_reported_and_the_records_are_still_told(
    firestore_project: str, db: firestore.Client
) -> None:
    intent = executed(db)
    with AlpacaSandbox() as alpaca:
        alpaca.inject("GET", *[status(503, "service unavailable")] * 10)
        env = {
            **WIDE,
            "BROKER": "alpaca",
            "AGENT_MODE": "LIVE",  # a loopback URL is not Alpaca's paper endpoint
            "APCA_API_KEY_ID": KEY_ID,
            "APCA_API_SECRET_KEY": SECRET_KEY,
            "APCA_API_BASE_URL": alpaca.base_url,
        }
        result = CliRunner().invoke(
            app,
            [
                "--project",
                firestore_project,
                "intent",
                intent.tenant_id,
                intent.client_intent_id,
                "--json",
            ],
            env=env,
        )

    assert result.exit_code == 0, result.output
    told = json.loads(result.stdout)
    assert told["reservation"]["outcome"] == "placed"
    assert told["broker"]["order"] is None
    assert told["broker"]["error"].startswith("BrokerTransientError")
    assert told["next_steps"][-1].startswith("The broker could not be asked")


class AnswerLost(PaperBroker):
    """The paper broker whose placement acts and then loses its answer (a timeout)."""

    def place_order(self, order: Any) -> Any:
        super().place_order(order)
        raise BrokerTransientError("read timeout after the broker acted")


def test_an_intent_whose_broker_answer_was_lost_is_told_as_still_counting_against_the_limits(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    intent = make_intent(tenant_id=unique("tenant"), created_at=datetime.now(UTC), qty=2)
    db.collection("tenants", intent.tenant_id, "accounts").document(intent.broker_account_id).set(
        {"max_position_qty": 10}
    )
    settings = fast_settings(firestore_timeout_seconds=PATIENT.timeout_seconds)
    broker = AnswerLost(db, clock=system_clock, policy=PATIENT)
    service = emulator_service(db, system_clock, settings=settings, broker=broker)
    with pytest.raises(BrokerTransientError):
        service.engine.execute_intent(intent)

    told = story(cli, intent, "--no-broker")

    assert told["reservation"]["outcome"] == "exception"
    assert any("Still counts against the account's position" in s for s in told["next_steps"])


# -- by client order id (what a broker order or an `exec.contradiction.*` line carries) ----------


def test_an_intent_is_found_by_its_plain_client_order_id(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    intent = executed(db)

    result = cli("intent", "--client-order-id", client_order_id_of(intent), "--json")

    assert result.exit_code == 0, result.output
    told = json.loads(result.stdout)
    assert (told["tenant_id"], told["client_intent_id"]) == (
        intent.tenant_id,
        intent.client_intent_id,
    )
    assert told["reservation"]["outcome"] == "placed"


def test_an_intent_is_found_by_its_hashed_client_order_id_through_its_record(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    intent = executed(db, client_intent_id="h" * 120)  # too long for the plain form: hashed

    result = cli("intent", "--client-order-id", client_order_id_of(intent), "--json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["client_intent_id"] == intent.client_intent_id


def test_an_order_at_the_broker_that_no_record_knows_is_named_unrecorded(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    tenant, intent_id = unique("tenant"), unique("intent")
    client_order_id = client_order_id_for(tenant, "acct-1", intent_id)
    PaperBroker(db, clock=system_clock, policy=PATIENT).place_order(
        make_order_request(
            tenant_id=tenant, broker_account_id="acct-1", client_order_id=client_order_id
        )
    )

    result = cli("intent", "--client-order-id", client_order_id, "--json")

    assert result.exit_code == 0, result.output
    told = json.loads(result.stdout)
    assert told["reservation"] is None
    assert told["next_steps"][0].startswith("UNRECORDED: the broker holds order")


def test_a_hashed_client_order_id_no_record_carries_exits_1_naming_the_runbook(
    cli: Callable[..., Result],
) -> None:
    result = cli("intent", "--client-order-id", client_order_id_for("t", "a", "x" * 120))

    assert result.exit_code == EXIT_PROBLEMS
    assert "unrecorded_order" in result.output


def test_ids_and_a_client_order_id_together_are_a_usage_error(
    cli: Callable[..., Result],
) -> None:
    result = cli("intent", "t", "i", "--client-order-id", "ex1-1-t-1-a-i")

    assert result.exit_code == EXIT_USAGE
