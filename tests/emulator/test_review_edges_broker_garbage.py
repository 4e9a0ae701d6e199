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

from collections.abc import Iterator
from typing import Any

import pytest
from google.cloud import firestore

import main
from execution.bootstrap import Service, bootstrap
from execution.brokers.alpaca import AlpacaBroker
from execution.errors import RetryableError
from execution.models import TradeIntent
from execution.settings import Settings
from tests.support.alpaca_wire import alpaca_env, intent_event
from tests.support.alpaca_wire import json_ok as ok
from tests.support.alpaca_wire import order_json as alpaca_order_json
from tests.support.builders import make_intent, reservation
from tests.support.wire_server import WireServer, http_answer

KEY_ID = "PKREVIEWGARBAGE0001"
SECRET_KEY = "review-garbage-secret-0001"
TENANT = "tenant-garbage"
DEEP = b"[" * 200_000 + b"]" * 200_000
"""400 KB of JSON nested 200,000 deep: inside the answer-size bound, past the recursion limit."""


@pytest.fixture
def service(
    db: firestore.Client, wire: WireServer, firestore_project: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Service]:
    env = alpaca_env(
        wire.base_url,
        key_id=KEY_ID,
        secret_key=SECRET_KEY,
        GOOGLE_CLOUD_PROJECT=firestore_project,
    )
    settings = Settings.from_env(env)
    broker = AlpacaBroker.from_settings(settings)
    service = bootstrap(settings, db=db, broker=broker)
    monkeypatch.setattr(main, "_service", service)
    yield service
    broker.close()


def order_json(intent: TradeIntent, **fields: Any) -> bytes:
    return alpaca_order_json(intent, **{"submitted_at": "2026-01-05T14:30:00Z", **fields})


def deliver(intent: TradeIntent) -> None:
    main.execute_intent(intent_event(intent))


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
