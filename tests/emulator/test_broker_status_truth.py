"""An order the broker answers as dead at once (rejected, or canceled/expired with nothing filled)
is recorded for what it is: `rejected`, with its id, counted against no limit.

Alpaca may answer `POST /v2/orders` 200 with an order whose `status` is already `rejected` (its
risk checks run after the id is assigned), or `canceled`/`expired` at once. Such an order exists
(its id is real, and Alpaca refuses its client order id again) but never fills. Recorded `placed`,
the record would disagree with the broker, the ledger would book a trade that never happened, and
the account's day count and position would count it for good. Each intent goes through
`main.execute_intent` into the engine on the Firestore emulator with the real `AlpacaBroker`
against a loopback server scripting Alpaca's answers; the reconciler then reads the same order in
Alpaca's listing and must agree with the record rather than repair it to `placed`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from google.cloud import firestore

import main
from execution.bootstrap import Service, bootstrap
from execution.clock import FakeClock
from execution.errors import RetryableError
from execution.firestore.reservations import inflight_ref
from execution.models import TradeIntent
from execution.settings import Settings
from tests.support.alpaca_wire import (
    alpaca_env,
    alpaca_service,
    intent_event,
    json_ok,
    order_json,
)
from tests.support.builders import ledger_entries, make_intent, reservation, unique
from tests.support.positions import position_of
from tests.support.wire_server import WireServer, hang_up

KEY_ID = "PKSTATUSTRUTH0000001"
SECRET_KEY = "status-truth-secret-0001"
TENANT = "tenant-status-truth"


@pytest.fixture(autouse=True)
def service(
    db: firestore.Client, wire: WireServer, firestore_project: str, monkeypatch: pytest.MonkeyPatch
) -> Service:
    service = alpaca_service(
        db, wire.base_url, firestore_project, key_id=KEY_ID, secret_key=SECRET_KEY
    )
    monkeypatch.setattr(main, "_service", service)
    return service


def limited_intent(db: firestore.Client) -> TradeIntent:
    """An intent on an account of its own that allows one order a day and a position of 1."""
    intent = make_intent(tenant_id=TENANT)
    db.collection("tenants", TENANT, "accounts").document(intent.broker_account_id).set(
        {"max_daily_orders": 1, "max_position_qty": 1}
    )
    return intent


def account_counts(db: firestore.Client, intent: TradeIntent) -> dict[str, Any]:
    state = inflight_ref(db, TENANT, intent.broker_account_id).get().to_dict() or {}
    return {
        "holds": len(state.get("leases", {})),
        "position": position_of(state, intent.symbol),
        "placed_today": sum(state.get("placed_orders", {}).values()),
    }


NOTHING_COUNTED = {"holds": 0, "position": 0, "placed_today": 0}

DEAD_AT_ONCE = [
    pytest.param({"status": "rejected"}, id="rejected"),
    pytest.param({"status": "rejected", "filled_qty": "0"}, id="rejected, filled 0"),
    pytest.param({"status": "canceled", "filled_qty": "0"}, id="canceled, filled 0"),
    pytest.param({"status": "expired", "filled_qty": "0"}, id="expired, filled 0"),
]


@pytest.mark.parametrize("answered", DEAD_AT_ONCE)
def test_an_order_answered_dead_is_recorded_rejected_with_its_id_and_counts_nothing(
    db: firestore.Client, wire: WireServer, answered: dict[str, str]
) -> None:
    intent = limited_intent(db)
    order_id = str(uuid.uuid4())
    wire.script(json_ok(order_json(intent, id=order_id, **answered)))

    main.execute_intent(intent_event(intent, unique("m")))

    record = reservation(db, TENANT, intent.client_intent_id)
    assert (record["outcome"], record["broker_order_id"]) == ("rejected", order_id)
    assert f"order {order_id} {answered['status']}" in record["error"]
    assert ledger_entries(db, TENANT, intent.client_intent_id) == []
    assert account_counts(db, intent) == NOTHING_COUNTED


@pytest.mark.parametrize(
    "answered",
    [
        pytest.param({"status": "canceled", "filled_qty": "0.5"}, id="canceled after a fill"),
        pytest.param({"status": "canceled"}, id="canceled, fill not said"),
        pytest.param({"status": "expired"}, id="expired, fill not said"),
        pytest.param({"status": "accepted", "filled_qty": "0"}, id="accepted"),
    ],
)
def test_an_order_that_may_have_filled_is_recorded_placed_and_counted(
    db: firestore.Client, wire: WireServer, answered: dict[str, str]
) -> None:
    intent = limited_intent(db)
    order_id = str(uuid.uuid4())
    wire.script(json_ok(order_json(intent, id=order_id, **answered)))

    main.execute_intent(intent_event(intent, unique("m")))

    record = reservation(db, TENANT, intent.client_intent_id)
    assert (record["outcome"], record["broker_order_id"]) == ("placed", order_id)
    assert account_counts(db, intent) == {"holds": 0, "position": 1, "placed_today": 1}


def test_the_dead_order_leaves_the_days_order_to_the_next_intent_and_the_reconciler_agrees(
    db: firestore.Client, wire: WireServer, service: Service
) -> None:
    first = limited_intent(db)
    second = make_intent(tenant_id=TENANT, broker_account_id=first.broker_account_id)
    dead = json.loads(order_json(first, status="rejected"))
    placed = json.loads(order_json(second))
    wire.script(json_ok(json.dumps(dead).encode()), json_ok(json.dumps(placed).encode()))

    main.execute_intent(intent_event(first, unique("m")))
    main.execute_intent(intent_event(second, unique("m")))
    wire.script(json_ok(json.dumps([dead, placed]).encode()))  # Alpaca's listing of both
    report = service.reconciler.reconcile()

    assert reservation(db, TENANT, first.client_intent_id)["outcome"] == "rejected"
    assert reservation(db, TENANT, second.client_intent_id)["outcome"] == "placed"
    assert (report.agreed, report.repaired, report.conflicts) == (2, 0, [])
    assert account_counts(db, first) == {"holds": 0, "position": 1, "placed_today": 1}


def test_a_lost_answer_for_an_order_that_died_is_settled_rejected_by_the_redelivery(
    db: firestore.Client, wire: WireServer
) -> None:
    intent = limited_intent(db)
    order_id = str(uuid.uuid4())
    message_id = unique("m")
    wire.script(hang_up)  # the order reached Alpaca; its answer did not reach us

    with pytest.raises(RetryableError):
        main.execute_intent(intent_event(intent, message_id))
    assert account_counts(db, intent)["holds"] == 1  # fate unknown: counted until known
    wire.script(json_ok(order_json(intent, id=order_id, status="rejected")))  # the lookup
    main.execute_intent(intent_event(intent, message_id))

    record = reservation(db, TENANT, intent.client_intent_id)
    assert (record["outcome"], record["broker_order_id"]) == ("rejected", order_id)
    assert ledger_entries(db, TENANT, intent.client_intent_id) == []
    assert account_counts(db, intent) == NOTHING_COUNTED


def test_the_reconciler_records_a_lost_answer_whose_order_died_rejected_counting_nothing(
    db: firestore.Client,
    wire: WireServer,
    firestore_project: str,
    monkeypatch: pytest.MonkeyPatch,
    reset_firestore: Callable[[], None],
) -> None:
    clock = FakeClock(datetime.now(UTC))  # intents are stamped by the wall clock
    env = alpaca_env(
        wire.base_url, key_id=KEY_ID, secret_key=SECRET_KEY, GOOGLE_CLOUD_PROJECT=firestore_project
    )
    service = bootstrap(Settings.from_env(env), db=db, clock=clock)
    monkeypatch.setattr(main, "_service", service)
    intent = limited_intent(db)
    dead = json.loads(order_json(intent, status="rejected"))
    wire.script(hang_up)
    with pytest.raises(RetryableError):
        main.execute_intent(intent_event(intent, unique("m")))

    clock.advance(3600)  # no redelivery came; no call of the lapsed lease can land any more
    wire.script(json_ok(json.dumps([dead]).encode()))  # the listing: nothing else is asked
    report = service.reconciler.reconcile()

    # The record says what the broker says (it said `exception` until then), and its hold ended
    # in the same write (tests/emulator/test_reconciler_truth_unknown_fate.py).
    assert (report.agreed, report.repaired, report.fates_settled) == (0, 0, 1)
    record = reservation(db, TENANT, intent.client_intent_id)
    assert (record["outcome"], record.get("broker_order_id")) == ("rejected", dead["id"])
    assert account_counts(db, intent) == NOTHING_COUNTED
