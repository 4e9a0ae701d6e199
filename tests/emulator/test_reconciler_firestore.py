"""The reconciler on the Firestore emulator with the paper broker: every broker order of ours is
recorded `placed` with its id, and every `placed` record names an order the broker has.

Each test stages the disagreement directly (an order at the broker that the record does not know,
a record that names a missing order) and runs the real service's reconciler.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
from google.cloud import firestore

from execution.brokers.paper import PaperBroker
from execution.clock import FakeClock
from execution.models import OrderRequest, Outcome, TradeIntent
from execution.settings import AgentMode
from tests.support.builders import (
    FAST_POLICY,
    client_order_id_of,
    emulator_service,
    fast_settings,
    make_intent,
    reservation,
    unique,
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def place_behind_the_records_back(
    db: firestore.Client, clock: FakeClock, intent: TradeIntent
) -> str:
    """An order at the paper broker under the intent's client order id; its broker id."""
    broker = PaperBroker(db, clock=clock, policy=FAST_POLICY)
    order = broker.place_order(OrderRequest.from_intent(intent, None, client_order_id_of(intent)))
    return order.broker_order_id


def reconcile(db: firestore.Client, clock: FakeClock, **settings: Any) -> dict[str, Any]:
    service = emulator_service(db, clock, settings=fast_settings(**settings))
    return service.reconciler.reconcile().as_dict()


def halt_tenant(db: firestore.Client, tenant_id: str) -> None:
    db.collection("tenants", tenant_id, "ops").document("execution_kill_switch").set(
        {"enabled": True}
    )


def test_an_order_whose_record_says_halted_is_recorded_placed_by_the_reconciler(
    db: firestore.Client, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    intent = make_intent(tenant_id=unique("tenant"))
    halt_tenant(db, intent.tenant_id)
    assert emulator_service(db, clock).engine.execute_intent(intent).outcome is Outcome.HALTED
    order_id = place_behind_the_records_back(db, clock, intent)

    with caplog.at_level(logging.ERROR):
        report = reconcile(db, clock)

    doc = reservation(db, intent.tenant_id, intent.client_intent_id)
    assert (doc["outcome"], doc["broker_order_id"]) == ("placed", order_id)
    assert doc["repair"]["found_by"] == "reconciler"
    assert doc["repair"]["previous_outcome"] == "halted"
    assert report["repaired"] == 1 and report["complete"]
    assert "exec.contradiction.repaired" in [r.getMessage() for r in caplog.records]


def test_a_second_run_finds_everything_agreed(db: firestore.Client, clock: FakeClock) -> None:
    intent = make_intent(tenant_id=unique("tenant"))
    emulator_service(db, clock).engine.execute_intent(intent)
    reconcile(db, clock)

    again = reconcile(db, clock)

    assert again["repaired"] == 0
    assert again["agreed"] >= 1
    assert again["conflicts"] == [] and again["missing_at_broker"] == []


def test_an_order_held_by_a_live_lease_is_left_to_its_attempt(
    db: firestore.Client, clock: FakeClock
) -> None:
    intent = make_intent(tenant_id=unique("tenant"))
    order_id = place_behind_the_records_back(db, clock, intent)
    db.collection("tenants", intent.tenant_id, "execution_reservations").document(
        intent.client_intent_id
    ).set(
        {
            "tenant_id": intent.tenant_id,
            "broker_account_id": intent.broker_account_id,
            "client_intent_id": intent.client_intent_id,
            "client_order_id": client_order_id_of(intent),
            "status": "reserved",
            "lease_id": "live-lease",
            "attempt": 1,
            "created_at": clock(),
            "expires_at": clock() + timedelta(seconds=30),
            "payload_hash": intent.payload_hash(),
        }
    )

    report = reconcile(db, clock)

    doc = reservation(db, intent.tenant_id, intent.client_intent_id)
    assert report["pending"] >= 1
    assert doc["status"] == "reserved" and doc.get("broker_order_id") is None
    assert order_id


def test_an_order_with_a_hashed_client_order_id_is_found_through_its_record(
    db: firestore.Client, clock: FakeClock
) -> None:
    intent = make_intent(tenant_id=unique("tenant"), client_intent_id="i" * 120)
    halt_tenant(db, intent.tenant_id)
    emulator_service(db, clock).engine.execute_intent(intent)
    assert client_order_id_of(intent).startswith("ex1h-")
    order_id = place_behind_the_records_back(db, clock, intent)

    reconcile(db, clock)

    doc = reservation(db, intent.tenant_id, intent.client_intent_id)
    assert (doc["outcome"], doc["broker_order_id"]) == ("placed", order_id)


def test_a_placed_record_whose_order_the_broker_lacks_is_reported(
    db: firestore.Client, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    intent = make_intent(tenant_id=unique("tenant"))
    emulator_service(db, clock).engine.execute_intent(intent)
    db.collection("tenants", intent.tenant_id, "execution_reservations").document(
        intent.client_intent_id
    ).update({"broker_order_id": "paper-never-placed"})

    with caplog.at_level(logging.ERROR):
        report = reconcile(db, clock)

    assert any("paper-never-placed" in line for line in report["missing_at_broker"])
    assert "exec.contradiction.missing_at_broker" in [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize("mode", [AgentMode.OFF, AgentMode.OBSERVE])
def test_the_reconciler_never_asks_the_broker_under_off_or_observe(
    db: firestore.Client, clock: FakeClock, mode: AgentMode
) -> None:
    report = reconcile(db, clock, agent_mode=mode)

    assert report["skipped"] is not None
    assert report["listed"] == 0
