"""A fault storm with known Alpaca keys: no key reaches a log, a record or a traceback.

The keys are read from the environment with the padding a console paste leaves (a newline, a
leading space) and hold characters that every quoting changes (`/`, `+`, `%`, `\\`, `'`), so an
error quoting them raw, as repr'd bytes (h11 does), URL-encoded or JSON-escaped would show.
A real loopback server (`tests/support/wire_server.py`) answers each order with one fault:
4xx/5xx echoing the keys in its body or reason phrase, a header echoing one, illegal status and
header lines that quote them (h11 puts those in its exception), malformed orders, silence, a
trickle, a hang-up. Each intent goes through `main.execute_intent` (so the dead-letter path
is live) into the engine on the Firestore emulator; then every captured log record (ours, httpx's
and httpcore's at DEBUG), every formatted traceback of a retried delivery (what functions-framework
prints), reservation, dead letter and ledger entry is searched for the keys in each form.
"""

from __future__ import annotations

import json
import logging
import traceback
import uuid
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from cloudevents.http import CloudEvent
from google.cloud import firestore

import main
from execution.bootstrap import Service, bootstrap
from execution.errors import RetryableError, SettingsError
from execution.models import TradeIntent
from execution.settings import Settings
from tests.support.alpaca_wire import intent_event, pubsub_event
from tests.support.builders import client_order_id_of, make_intent, unique
from tests.support.wire_server import (
    Script,
    Trickle,
    WireServer,
    hang_up,
    http_answer,
    raw_answer,
    silence,
)

KEY_ID = f"PKSTORM{uuid.uuid4().hex[:12].upper()}"
SECRET_KEY = f"s3cr/t+{uuid.uuid4().hex[:16]}\\%'=~Z"
TENANT = "tenant-storm"
TRICKLE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10000\r\n\r\n"


def forms(secret: str) -> list[str]:
    """How an error could quote `secret` (compared lower-cased: %2F and %2f alike)."""
    return [
        secret,
        repr(secret.encode())[2:-1],
        quote(secret, safe=""),
        quote_plus(secret),
        json.dumps(secret)[1:-1],
    ]


def order_json(client_order_id: str, **fields: Any) -> bytes:
    order = {
        "id": str(uuid.uuid4()),
        "client_order_id": client_order_id,
        "symbol": "AAPL",
        "side": "buy",
        "qty": "1",
        "status": "accepted",
        "type": "limit",
        "limit_price": "100",
        "time_in_force": "day",
        "filled_avg_price": None,
    }
    return json.dumps({**order, **fields}).encode()


def storm(client_order_ids: list[str]) -> list[Script]:
    """One fault per order, in order (the last takes two: its POST and its lookup)."""
    key, secret = KEY_ID.encode(), SECRET_KEY.encode()
    text = f"key {KEY_ID} secret {SECRET_KEY}"
    faults: list[Script] = [
        http_answer(b"HTTP/1.1 500 Internal Server Error", json.dumps({"message": text}).encode()),
        http_answer(b"HTTP/1.1 503 Service Unavailable", quote(text, safe="").encode()),
        http_answer(b"HTTP/1.1 429 Too Many Requests", json.dumps(text).encode()),
        http_answer(b"HTTP/1.1 403 Forbidden", json.dumps({"message": quote_plus(text)}).encode()),
        http_answer(b"HTTP/1.1 422 Unprocessable", repr(secret).encode() + b" " + key),
        http_answer(b"HTTP/1.1 401 " + key + b" " + secret, b""),
        http_answer(b"HTTP/1.1 200 OK", b"not json: " + secret),
        http_answer(b"HTTP/1.1 200 OK", order_json(client_order_ids[7], qty=SECRET_KEY)),
        raw_answer(b"HTTP/1.1 2OO " + secret + b"\r\n\r\n"),
        raw_answer(b"HTTP/1.1 200 OK\r\nX-Echo " + secret + b"\r\nContent-Length: 0\r\n\r\n"),
        raw_answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + secret + b"\r\n"),
        silence(5.0),
        Trickle(order_json(client_order_ids[12], padding="x" * 200), 0.05, prefix=TRICKLE_HEAD),
        hang_up,
        # The one that succeeds: a response header echoing the key, logged by httpcore at DEBUG.
        http_answer(
            b"HTTP/1.1 200 OK",
            order_json(client_order_ids[14]),
            b"Content-Type: application/json",
            b"X-Api-Key: " + key,
        ),
        # A duplicate answer, then a lookup answering an order that echoes the secret.
        http_answer(
            b"HTTP/1.1 422 Unprocessable", b'{"message": "client_order_id must be unique"}'
        ),
        http_answer(b"HTTP/1.1 200 OK", order_json(client_order_ids[15], symbol=SECRET_KEY)),
    ]
    return faults


@pytest.fixture
def service(db: firestore.Client, wire: WireServer, firestore_project: str) -> Service:
    env = {
        "GOOGLE_CLOUD_PROJECT": firestore_project,
        "BROKER": "alpaca",
        # A console paste: a trailing newline on one, a leading space and a newline on the other.
        "APCA_API_KEY_ID": f"{KEY_ID}\n",
        "APCA_API_SECRET_KEY": f" {SECRET_KEY}\r\n",
        "APCA_API_BASE_URL": wire.base_url,
        "AGENT_MODE": "LIVE",  # a loopback Alpaca is not Alpaca's paper host
        "BROKER_TIMEOUT_SECONDS": "0.5",
        "FUNCTION_TIMEOUT_SECONDS": "20",
        "RESERVATION_TTL_SECONDS": "30",
        "FIRESTORE_TIMEOUT_SECONDS": "5",
    }
    return bootstrap(Settings.from_env(env), db=db)


def deliver(event: CloudEvent) -> str | None:
    """Deliver as functions-framework would; the traceback it would print, where it raises."""
    try:
        main.execute_intent(event)
    except RetryableError as exc:
        return "".join(traceback.format_exception(exc))
    return None


def deliver_to_the_broker(intent: TradeIntent, wire: WireServer) -> str | None:
    """Deliver `intent` until it reaches the broker (a slow emulator may time a read out first)."""
    event = intent_event(intent)
    sent = len(wire.requests)
    for _ in range(5):
        printed = deliver(event)
        if len(wire.requests) > sent:
            return printed
    raise AssertionError(f"{intent.client_intent_id} never reached the broker: {printed}")


def stored(db: firestore.Client) -> dict[str, list[dict[str, Any]]]:
    """Every document the storm could have written, by kind, with its id."""
    collections = {
        "reservation": db.collection("tenants", TENANT, "execution_reservations"),
        "ledger entry": db.collection("tenants", TENANT, "ledger_trades"),
        "dead letter": db.collection("execution_dead_letters"),
    }
    return {
        kind: [{"id": snap.id, **(snap.to_dict() or {})} for snap in ref.stream()]
        for kind, ref in collections.items()
    }


def leaks(texts: list[str]) -> list[str]:
    wanted = [form.lower() for secret in (KEY_ID, SECRET_KEY) for form in forms(secret)]
    return [text[:300] for text in texts if any(form in text.lower() for form in wanted)]


def test_no_form_of_either_key_reaches_a_log_a_record_or_a_traceback_in_a_fault_storm(
    db: firestore.Client,
    wire: WireServer,
    service: Service,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(main, "_service", service)
    # main.configure_logging stops `execution` records at its own handler; capture them anyway.
    monkeypatch.setattr(logging.getLogger("execution"), "propagate", True)
    caplog.set_level(logging.DEBUG)
    intents = [make_intent(tenant_id=TENANT, qty=1, limit_price=100.0) for _ in range(16)]
    wire.script(*storm([client_order_id_of(intent) for intent in intents]))

    tracebacks = [deliver_to_the_broker(intent, wire) for intent in intents]
    dead_lettered = deliver(
        pubsub_event(b'{"tenant_id": "tenant-storm", "qty": "many"}', unique("m"))
    )

    documents = stored(db)
    records = [f"{r.getMessage()} {r.__dict__!r}" for r in caplog.records]
    # The storm was real: every order reached the server with the stripped keys, each fault
    # became a retry or a rejection, one order was placed, the bad payload was dead-lettered.
    headers = f"\r\nAPCA-API-KEY-ID: {KEY_ID}\r\nAPCA-API-SECRET-KEY: {SECRET_KEY}\r\n"
    assert [headers.encode() in request for request in wire.requests] == [True] * 17
    outcomes = sorted(document.get("outcome") for document in documents["reservation"])
    # 401 and a 403 refusing the keys are retried (exception), never rejected for good; so is
    # the lookup whose order echoes the secret (an answer quoting our key is no order).
    assert outcomes == ["exception"] * 14 + ["placed"] + ["rejected"]
    assert sum(text is not None for text in tracebacks) == 14
    assert (len(documents["ledger entry"]), len(documents["dead letter"])) == (1, 1)
    assert dead_lettered is None
    assert {r.name.split(".")[0] for r in caplog.records} >= {"execution", "httpx", "httpcore"}
    # ... and no form of either key anywhere.
    assert leaks(records) == []
    assert leaks([text for text in tracebacks if text is not None]) == []
    for kind, texts in documents.items():
        assert leaks([repr(text) for text in texts]) == [], kind


@pytest.mark.parametrize("variable", ["APCA_API_KEY_ID", "APCA_API_SECRET_KEY"])
def test_a_key_with_an_inner_newline_is_refused_at_start_up_without_quoting_it(
    variable: str, wire: WireServer
) -> None:
    env = {
        "BROKER": "alpaca",
        "APCA_API_KEY_ID": KEY_ID,
        "APCA_API_SECRET_KEY": SECRET_KEY,
        "APCA_API_BASE_URL": wire.base_url,
        "AGENT_MODE": "LIVE",
        variable: "PKHALF\nOTHERHALF",
    }

    with pytest.raises(SettingsError) as raised:
        Settings.from_env(env)

    assert variable in str(raised.value)
    assert "OTHERHALF" not in "".join(traceback.format_exception(raised.value))
    assert wire.requests == []
