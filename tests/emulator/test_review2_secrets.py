"""Second review: a broker key echoed inside an order's own fields reaches no record or log.

The first review scrubbed keys from the broker's error messages and from the duplicate lookup's
mismatch. An order answer is another channel: a proxy (or a broker's bug) that echoes the request's
headers into an order's `symbol`, `id` or `status` makes the answer an order whose fields quote our
key. Read as an order, those fields went on unscrubbed: the engine's "this answer is not ours"
error quoted the symbol into the reservation's `error` and the logs, a lookup's mismatch into a
dead letter, and an `id` echoing the key became the recorded `broker_order_id`.

Each intent goes through `main.execute_intent` into the engine on the Firestore emulator with the
real `AlpacaBroker` against a loopback server scripting each answer; then the records, the dead
letters, every log record and the retried delivery's traceback are searched for the key.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

import pytest
from google.cloud import firestore

import main
from execution.bootstrap import Service
from execution.errors import RetryableError
from execution.models import TradeIntent
from tests.support.alpaca_wire import alpaca_service, intent_event, json_ok, order_json
from tests.support.builders import ledger_entries, make_intent, reservation, unique
from tests.support.wire_server import WireServer, http_answer

KEY_ID = "PKREVIEW2ECHO000001"
SECRET_KEY = "review2-echoed-secret-0001"
TENANT = "tenant-review2-secrets"


@pytest.fixture
def service(db: firestore.Client, wire: WireServer, firestore_project: str) -> Service:
    return alpaca_service(
        db, wire.base_url, firestore_project, key_id=KEY_ID, secret_key=SECRET_KEY
    )


@pytest.fixture(autouse=True)
def as_deployed(
    service: Service, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(main, "_service", service)
    monkeypatch.setattr(logging.getLogger("execution"), "propagate", True)
    caplog.set_level(logging.DEBUG)


def deliver(intent: TradeIntent, message_id: str, printed: list[str]) -> None:
    """One delivery; a retry's traceback (as functions-framework prints it) is kept."""
    try:
        main.execute_intent(intent_event(intent, message_id))
    except RetryableError as exc:
        printed.append("".join(traceback.format_exception(exc)))


def leaks(texts: list[str]) -> list[str]:
    return [text[:300] for text in texts if KEY_ID in text or SECRET_KEY in text]


def stored_texts(db: firestore.Client, intent: TradeIntent) -> list[str]:
    record = reservation(db, TENANT, intent.client_intent_id)
    letters = [snap.to_dict() for snap in db.collection("execution_dead_letters").stream()]
    ledger = ledger_entries(db, TENANT, intent.client_intent_id)
    return [str(record), *map(str, letters), *ledger]


def logged_texts(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [str(value) for r in caplog.records for value in (r.getMessage(), *vars(r).values())]


ECHOED_FIELDS = [
    pytest.param({"symbol": SECRET_KEY}, id="symbol"),
    pytest.param({"side": KEY_ID}, id="side"),
    pytest.param({"id": SECRET_KEY}, id="order id"),
    pytest.param({"status": f"accepted {SECRET_KEY}"}, id="status"),
]


@pytest.mark.parametrize("echoed", ECHOED_FIELDS)
def test_a_placed_answer_whose_fields_echo_a_key_reaches_no_record_log_or_traceback(
    db: firestore.Client,
    wire: WireServer,
    caplog: pytest.LogCaptureFixture,
    echoed: dict[str, Any],
) -> None:
    intent = make_intent(tenant_id=TENANT, qty=1, limit_price=100.0)
    message_id, printed = unique("m"), []
    wire.script(json_ok(order_json(intent, **echoed)))

    deliver(intent, message_id, printed)

    assert len(wire.requests) == 1
    assert reservation(db, TENANT, intent.client_intent_id)["outcome"] == "exception"
    assert leaks(stored_texts(db, intent)) == []
    assert leaks(printed) == []
    assert leaks(logged_texts(caplog)) == []


def test_a_lookup_answer_whose_fields_echo_a_key_is_retried_and_reaches_no_dead_letter(
    db: firestore.Client, wire: WireServer, caplog: pytest.LogCaptureFixture
) -> None:
    intent = make_intent(tenant_id=TENANT, qty=1, limit_price=100.0)
    message_id, printed = unique("m"), []
    wire.script(http_answer(b"HTTP/1.1 503 Service Unavailable", b'{"message": "busy"}'))
    deliver(intent, message_id, printed)
    # The redelivery asks the broker by client order id first; the answer echoes the key.
    wire.script(json_ok(order_json(intent, symbol=SECRET_KEY)))

    deliver(intent, message_id, printed)

    assert len(wire.requests) == 2
    assert len(printed) == 2  # retried: an answer quoting our key is no answer about an order
    assert reservation(db, TENANT, intent.client_intent_id)["outcome"] == "exception"
    assert leaks(stored_texts(db, intent)) == []
    assert leaks(printed) == []
    assert leaks(logged_texts(caplog)) == []
