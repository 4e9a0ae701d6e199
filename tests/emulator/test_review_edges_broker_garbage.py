"""Review: whatever a broker answers, `AlpacaBroker` raises only errors of our tree.

The adapter turns an unreadable answer into "outcome unknown" (`BrokerTransientError`), but only
where reading it raised `ValueError`, `TypeError` or `KeyError`. A time Python cannot shift to
UTC (`0001-01-01T00:00:00+23:59`: `OverflowError`) or JSON nested deeper than the interpreter's
recursion limit (`RecursionError`, well inside the 1 MiB an answer may have) escaped as they
were: not a retry the entry point knows (a bare 500 and a traceback instead of
`exec.delivery.retry`), a reconcile run that crashes instead of reporting an incomplete listing
(one such order in the lookback window blinds the reconciler for a day), a broker refusal that
crashes instead of being recorded.

A real loopback server scripts each answer; the intent goes through `main.execute_intent` into the
engine on the Firestore emulator with the real `AlpacaBroker`, the reconciler runs as deployed.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from cloudevents.http import CloudEvent
from google.cloud import firestore

import main
from execution.bootstrap import Service, bootstrap
from execution.brokers.alpaca import AlpacaBroker
from execution.errors import RetryableError
from execution.models import TradeIntent
from execution.settings import Settings
from tests.support.builders import client_order_id_of, make_intent, reservation, unique
from tests.support.wire_server import Script, WireServer, http_answer

KEY_ID = "PKREVIEWGARBAGE0001"
SECRET_KEY = "review-garbage-secret-0001"
TENANT = "tenant-garbage"
DEEP = b"[" * 200_000 + b"]" * 200_000
"""400 KB of JSON nested 200,000 deep: inside the answer-size bound, past the recursion limit."""


@pytest.fixture
def wire() -> Iterator[WireServer]:
    with WireServer() as server:
        yield server


@pytest.fixture
def service(
    db: firestore.Client, wire: WireServer, firestore_project: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Service]:
    env = {
        "GOOGLE_CLOUD_PROJECT": firestore_project,
        "BROKER": "alpaca",
        "APCA_API_KEY_ID": KEY_ID,
        "APCA_API_SECRET_KEY": SECRET_KEY,
        "APCA_API_BASE_URL": wire.base_url,
        "AGENT_MODE": "LIVE",  # a loopback Alpaca is not Alpaca's paper host
        "BROKER_TIMEOUT_SECONDS": "2",
        "FUNCTION_TIMEOUT_SECONDS": "20",
        "RESERVATION_TTL_SECONDS": "30",
        "FIRESTORE_TIMEOUT_SECONDS": "5",
    }
    settings = Settings.from_env(env)
    broker = AlpacaBroker.from_settings(settings)
    service = bootstrap(settings, db=db, broker=broker)
    monkeypatch.setattr(main, "_service", service)
    yield service
    broker.close()


def order_json(intent: TradeIntent, **fields: Any) -> bytes:
    order = {
        "id": str(uuid.uuid4()),
        "client_order_id": client_order_id_of(intent),
        "symbol": intent.symbol,
        "side": intent.side,
        "qty": str(intent.qty),
        "status": "accepted",
        "type": intent.order_type,
        "limit_price": str(intent.limit_price),
        "time_in_force": "day",
        "filled_avg_price": None,
        "submitted_at": "2026-01-05T14:30:00Z",
    }
    return json.dumps({**order, **fields}).encode()


def deliver(intent: TradeIntent) -> None:
    data = json.dumps(intent.model_dump(mode="json")).encode()
    main.execute_intent(
        CloudEvent(
            {
                "type": "google.cloud.pubsub.topic.v1.messagePublished",
                "source": "//pubsub.googleapis.com/projects/demo/topics/trade-intents",
            },
            {
                "message": {
                    "data": base64.b64encode(data).decode(),
                    "messageId": unique("m"),
                    "publishTime": datetime.now(UTC).isoformat(),
                },
                "subscription": "projects/demo/subscriptions/trade-intents-push",
            },
        )
    )


def ok(body: bytes) -> Script:
    return http_answer(b"HTTP/1.1 200 OK", body, b"Content-Type: application/json")


GARBAGE_ORDERS = [
    pytest.param(
        lambda intent: order_json(intent, submitted_at="0001-01-01T00:00:00+23:59"),
        id="a time before year 1 in UTC",
    ),
    pytest.param(
        lambda intent: order_json(intent, submitted_at="9999-12-31T23:59:59-23:59"),
        id="a time after year 9999 in UTC",
    ),
    pytest.param(lambda intent: DEEP, id="JSON nested 200,000 deep"),
]


@pytest.mark.parametrize("answer", GARBAGE_ORDERS)
def test_an_accepted_order_answered_with_garbage_is_a_retry_of_unknown_outcome(
    db: firestore.Client, wire: WireServer, service: Service, answer: Any
) -> None:
    intent = make_intent(tenant_id=TENANT, qty=1, limit_price=100.0)
    wire.script(ok(answer(intent)))

    with pytest.raises(RetryableError):
        deliver(intent)

    record = reservation(db, TENANT, intent.client_intent_id)
    assert (record["outcome"], record.get("broker_order_id")) == ("exception", None)


def test_a_refusal_whose_body_is_nested_past_the_recursion_limit_is_recorded(
    db: firestore.Client, wire: WireServer, service: Service
) -> None:
    intent = make_intent(tenant_id=TENANT, qty=1, limit_price=100.0)
    wire.script(http_answer(b"HTTP/1.1 422 Unprocessable Entity", DEEP))

    deliver(intent)

    record = reservation(db, TENANT, intent.client_intent_id)
    assert record["outcome"] == "rejected"
    assert len(record["error"]) < 1000


@pytest.mark.parametrize("answer", GARBAGE_ORDERS)
def test_a_listing_with_a_garbage_order_makes_the_reconcile_incomplete_not_a_crash(
    wire: WireServer, service: Service, answer: Any
) -> None:
    intent = make_intent(tenant_id=TENANT, qty=1, limit_price=100.0)
    page = answer(intent)
    wire.script(ok(page if page is DEEP else b"[" + page + b"]"))

    report = service.reconciler.reconcile().as_dict()

    assert report["complete"] is False
