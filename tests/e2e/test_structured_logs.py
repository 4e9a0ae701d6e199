"""Cloud Logging's structured form, read from the log of a real functions-framework server.

A request carrying a trace header (as Cloud Run functions' front end and Eventarc send it) must
give every line of its invocation `logging.googleapis.com/trace` and `spanId`, the intent's ids
and a source location, so Cloud Logging groups one intent's lines with its request.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.functions_server import FunctionsServer
from execution.telemetry import SOURCE_FIELD, SPAN_FIELD, TRACE_FIELD
from tests.support.builders import unique
from tests.support.waiting import wait_until

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
DELIVERY_ATTEMPTS = 5


@pytest.fixture(scope="module")
def server(
    firestore_project: str, firestore_emulator_host: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FunctionsServer]:
    functions = FunctionsServer(
        "execute_intent_push",
        "http",
        env={
            "GOOGLE_CLOUD_PROJECT": firestore_project,
            "FIRESTORE_EMULATOR_HOST": firestore_emulator_host,
        },
        log_path=Path(tmp_path_factory.mktemp("functions")) / "execute_intent.log",
    )
    functions.start()
    yield functions
    functions.kill()


def push(server: FunctionsServer, payload: dict[str, Any], headers: dict[str, str]) -> str:
    """POST one Pub/Sub push body as the push subscription would; returns its message id."""
    message_id = unique("msg")
    body = {
        "message": {
            "data": base64.b64encode(json.dumps(payload).encode()).decode(),
            "messageId": message_id,
            "publishTime": "2026-01-01T00:00:00Z",
            "attributes": {},
        },
        "subscription": "projects/demo/subscriptions/intents",
    }
    request = urllib.request.Request(
        server.url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", **headers},
    )
    for _ in range(DELIVERY_ATTEMPTS):  # a retry answer (a slow emulator) is pushed again
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                assert response.status == 200
                return message_id
        except urllib.error.HTTPError as error:
            assert error.code == 500, error.read()
    raise AssertionError(f"{message_id} was not acked in {DELIVERY_ATTEMPTS} deliveries")


def intent() -> dict[str, Any]:
    return {
        "tenant_id": "tenant-logs",
        "broker_account_id": "acct-logs",
        "client_intent_id": unique("intent"),
        "symbol": "AAPL",
        "side": "buy",
        "qty": 1,
        "order_type": "limit",
        "limit_price": 10.0,
        "dry_run": True,
    }


def lines_of(server: FunctionsServer, message_id: str) -> list[dict[str, Any]]:
    """Every line of the invocation that acked `message_id` (found by its bound message id)."""

    def lines() -> list[dict[str, Any]] | None:
        found = [e for e in server.events() if e.get("message_id") == message_id]
        return found if any(e.get("event") == "exec.delivery.acked" for e in found) else None

    return wait_until(lines, timeout=60, what="the invocation's lines")


def test_every_line_of_an_invocation_carries_the_traceparent_trace_span_and_intent_ids(
    server: FunctionsServer, firestore_project: str
) -> None:
    payload = intent()

    message_id = push(server, payload, {"traceparent": f"00-{TRACE_ID}-{SPAN_ID}-01"})

    lines = lines_of(server, message_id)
    events = {line["event"] for line in lines}
    assert {"exec.delivery.received", "exec.reservation.acquired", "exec.delivery.acked"} <= events
    for line in lines:
        assert line[TRACE_FIELD] == f"projects/{firestore_project}/traces/{TRACE_ID}"
        assert line[SPAN_FIELD] == SPAN_ID
        assert line["logging.googleapis.com/trace_sampled"] is True
        assert (line["tenant_id"], line["broker_account_id"], line["client_intent_id"]) == (
            "tenant-logs",
            "acct-logs",
            payload["client_intent_id"],
        )
        assert line[SOURCE_FIELD]["file"].endswith(".py")
        assert "telemetry.py" not in line[SOURCE_FIELD]["file"]


def test_the_cloud_trace_context_header_gives_the_trace_and_the_span_in_hex(
    server: FunctionsServer, firestore_project: str
) -> None:
    message_id = push(server, intent(), {"X-Cloud-Trace-Context": f"{TRACE_ID}/12345;o=1"})

    [received] = [
        line for line in lines_of(server, message_id) if line["event"] == "exec.delivery.received"
    ]
    assert received[TRACE_FIELD] == f"projects/{firestore_project}/traces/{TRACE_ID}"
    assert received[SPAN_FIELD] == f"{12345:016x}"


def test_a_payload_that_is_dead_lettered_is_still_found_by_its_ids(
    server: FunctionsServer,
) -> None:
    payload = {**intent(), "qty": -1}

    message_id = push(server, payload, {"traceparent": f"00-{TRACE_ID}-{SPAN_ID}-00"})

    [dead] = wait_until(
        lambda: [
            e
            for e in server.events("exec.delivery.dead_lettered")
            if e.get("message_id") == message_id
        ],
        timeout=60,
        what="the dead letter",
    )
    assert dead["client_intent_id"] == payload["client_intent_id"]
    assert dead["logging.googleapis.com/trace_sampled"] is False
