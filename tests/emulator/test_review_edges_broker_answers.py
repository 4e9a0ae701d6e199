"""Review: a broker answer that names another order is never taken for this intent's order.

A 2xx answer proves only that *something* answered. Alpaca (or a proxy, a cache, a load balancer
in front of it) that answers our `POST /v2/orders` or our lookup with an order that is not the one
we asked about (another client order id, another symbol or quantity) must not be recorded as this
intent's order: that records `placed` with an order id the broker's book does not hold for us, or
refuses an intent for good because of a garbage lookup. Such an answer is "outcome unknown" (a
retry), and the retry's lookup by client order id decides.

A real loopback server scripts each answer (`tests/support/wire_server.py`); the intent goes
through `main.execute_intent` into the engine and the Firestore emulator with the real
`AlpacaBroker`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from google.cloud import firestore

import main
from execution.bootstrap import Service, bootstrap
from execution.errors import RetryableError
from execution.models import TradeIntent
from execution.settings import Settings
from tests.support.alpaca_wire import alpaca_env, intent_event
from tests.support.alpaca_wire import json_ok as ok
from tests.support.alpaca_wire import order_json as alpaca_order_json
from tests.support.builders import (
    ledger_entries,
    make_intent,
    reservation,
    unique,
)
from tests.support.wire_server import WireServer, http_answer

KEY_ID = "PKREVIEWEDGES000001"
SECRET_KEY = "review-edges-secret-000001"
TENANT = "tenant-answers"


@pytest.fixture
def service(db: firestore.Client, wire: WireServer, firestore_project: str) -> Service:
    env = alpaca_env(
        wire.base_url,
        key_id=KEY_ID,
        secret_key=SECRET_KEY,
        GOOGLE_CLOUD_PROJECT=firestore_project,
    )
    return bootstrap(Settings.from_env(env), db=db)


@pytest.fixture(autouse=True)
def as_deployed(service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(main, "_service", service)


def order_json(intent: TradeIntent, order_id: str, **fields: Any) -> bytes:
    """Alpaca's order for `intent` (as it would echo it), with `fields` changed."""
    submitted_at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return alpaca_order_json(intent, id=order_id, submitted_at=submitted_at, **fields)


def deliver(intent: TradeIntent, message_id: str) -> RetryableError | None:
    """One delivery through the entry point: None where it acked, else the retry it raised."""
    event = intent_event(intent, message_id)
    try:
        main.execute_intent(event)
    except RetryableError as exc:
        return exc
    return None


def posts(wire: WireServer) -> int:
    return sum(request.startswith(b"POST ") for request in wire.requests)


ANOTHER_ORDER = [
    pytest.param({"client_order_id": "ex1-5-other-6-acct-9-theirs"}, id="another client order id"),
    pytest.param({"symbol": "MSFT"}, id="another symbol"),
    pytest.param({"qty": "1000"}, id="another quantity"),
    pytest.param({"side": "sell"}, id="another side"),
]


@pytest.mark.parametrize("changed", ANOTHER_ORDER)
def test_a_placed_answer_naming_another_order_is_never_recorded_as_the_intents_order(
    db: firestore.Client, wire: WireServer, changed: dict[str, str]
) -> None:
    intent = make_intent(tenant_id=TENANT, qty=1, limit_price=100.0)
    foreign, ours = str(uuid.uuid4()), str(uuid.uuid4())
    message_id = unique("m")
    wire.script(ok(order_json(intent, foreign, **changed)))

    first = deliver(intent, message_id)

    # Outcome unknown: retried, recorded as an exception, never `placed` with that order.
    record = reservation(db, TENANT, intent.client_intent_id)
    assert isinstance(first, RetryableError)
    assert (record["outcome"], record.get("broker_order_id")) == ("exception", None)
    assert ledger_entries(db, TENANT, intent.client_intent_id) == []

    # The redelivery asks the broker by our client order id; its answer is the truth.
    wire.script(ok(order_json(intent, ours)))
    second = deliver(intent, message_id)

    record = reservation(db, TENANT, intent.client_intent_id)
    assert second is None
    assert (record["outcome"], record["broker_order_id"]) == ("placed", ours)
    assert ledger_entries(db, TENANT, intent.client_intent_id) == [ours]
    assert posts(wire) == 1


def test_a_lookup_answering_with_another_client_order_id_is_retried_not_dead_lettered(
    db: firestore.Client, wire: WireServer
) -> None:
    """Attempt 1's answer is lost; attempt 2's lookup is answered with someone else's order.

    That answer says nothing about our id: the delivery is retried (never a dead letter and a
    dead intent), and the next lookup's true answer is recorded.
    """
    intent = make_intent(tenant_id=TENANT, qty=1, limit_price=100.0)
    ours = str(uuid.uuid4())
    message_id = unique("m")
    wire.script(http_answer(b"HTTP/1.1 503 Service Unavailable", b"{}"))
    assert isinstance(deliver(intent, message_id), RetryableError)

    someone_elses = order_json(intent, str(uuid.uuid4()), client_order_id="ex1-1-x-1-y-z")
    wire.script(ok(someone_elses))
    lookup = deliver(intent, message_id)

    assert isinstance(lookup, RetryableError)
    assert db.collection("execution_dead_letters").document(message_id).get().exists is False
    assert reservation(db, TENANT, intent.client_intent_id)["outcome"] == "exception"

    wire.script(ok(order_json(intent, ours)))
    assert deliver(intent, message_id) is None
    record = reservation(db, TENANT, intent.client_intent_id)
    assert (record["outcome"], record["broker_order_id"]) == ("placed", ours)
    assert posts(wire) == 1


def test_a_duplicate_answer_whose_lookup_names_another_id_never_rejects_the_intent(
    db: firestore.Client, wire: WireServer
) -> None:
    """Alpaca says our client order id is in use, and the lookup answers with an order under
    another id: nothing is known about ours, so the intent is retried, never `rejected` (a
    rejected record would have the reconciler cancel our real order as one it forbade)."""
    intent = make_intent(tenant_id=TENANT, qty=1, limit_price=100.0)
    ours = str(uuid.uuid4())
    message_id = unique("m")
    wire.script(
        http_answer(
            b"HTTP/1.1 422 Unprocessable Entity",
            b'{"code": 40010001, "message": "client_order_id must be unique"}',
        ),
        ok(order_json(intent, str(uuid.uuid4()), client_order_id="ex1-1-x-1-y-z")),
    )

    first = deliver(intent, message_id)

    assert isinstance(first, RetryableError)
    assert reservation(db, TENANT, intent.client_intent_id)["outcome"] == "exception"

    wire.script(ok(order_json(intent, ours)))
    assert deliver(intent, message_id) is None
    record = reservation(db, TENANT, intent.client_intent_id)
    assert (record["outcome"], record["broker_order_id"]) == ("placed", ours)
