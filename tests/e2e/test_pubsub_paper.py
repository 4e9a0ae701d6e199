"""End to end on the default wiring: Pub/Sub emulator → push → functions-framework → Firestore.

The function runs as deployed (`main.execute_intent`, paper broker), in its own process; the test
only publishes and then reads what users read: documents in the Firestore emulator and the
function's structured log.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from google.cloud import firestore

from devtools.functions_server import FunctionsServer
from devtools.pubsub import PushChannel
from tests.support.builders import ledger_entries, payload_client_order_id, unique
from tests.support.waiting import wait_until

WAIT = 60.0  # a bound against a hang; each wait returns as soon as its state is reached


@pytest.fixture(scope="module")
def server(
    firestore_project: str, firestore_emulator_host: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FunctionsServer]:
    functions = FunctionsServer(
        "execute_intent",
        "cloudevent",
        env={
            "GOOGLE_CLOUD_PROJECT": firestore_project,
            "FIRESTORE_EMULATOR_HOST": firestore_emulator_host,
            "FUNCTION_TIMEOUT_SECONDS": "4",
            "RESERVATION_TTL_SECONDS": "6",
            "CLOCK_SKEW_SECONDS": "0.5",
            "FIRESTORE_TIMEOUT_SECONDS": "2",
        },
        log_path=Path(tmp_path_factory.mktemp("functions")) / "execute_intent.log",
    )
    functions.start()
    yield functions
    functions.kill()


def intent(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "tenant_id": "tenant-e2e",
        "broker_account_id": "acct-1",
        "client_intent_id": unique("intent"),
        "symbol": "AAPL",
        "side": "buy",
        "qty": 3,
        "order_type": "limit",
        "limit_price": 150.0,
    }
    payload.update(overrides)
    return payload


def reservation_doc(db: firestore.Client, payload: dict[str, Any]) -> dict[str, Any] | None:
    snap = (
        db.collection("tenants", payload["tenant_id"], "execution_reservations")
        .document(payload["client_intent_id"])
        .get()
    )
    return snap.to_dict() if snap.exists else None


def acked(server: FunctionsServer, message_id: str) -> list[dict[str, Any]]:
    return [e for e in server.events("exec.delivery.acked") if e["message_id"] == message_id]


def deliveries(server: FunctionsServer, message_id: str) -> int:
    return sum(1 for e in server.events("exec.delivery.received") if e["message_id"] == message_id)


def test_a_published_intent_is_placed_and_its_reservation_released(
    channel: PushChannel, server: FunctionsServer, db: firestore.Client
) -> None:
    payload = intent()

    message_id = channel.publish(payload)

    [ack] = wait_until(lambda: acked(server, message_id), timeout=WAIT, what="the ack")
    doc = reservation_doc(db, payload)
    assert ack["outcome"] == "placed"
    assert doc is not None and (doc["status"], doc["outcome"]) == ("released", "placed")
    assert ledger_entries(db, "tenant-e2e", payload["client_intent_id"]) == [doc["broker_order_id"]]


def test_the_same_intent_published_three_times_at_once_places_one_order_and_acks_all(
    channel: PushChannel, server: FunctionsServer, db: firestore.Client
) -> None:
    payload = intent()

    with ThreadPoolExecutor(3) as pool:
        message_ids = list(pool.map(lambda _: channel.publish(payload), range(3)))

    outcomes = wait_until(
        lambda: (
            [a[0]["outcome"] for m in message_ids if (a := acked(server, m))]
            if all(acked(server, m) for m in message_ids)
            else None
        ),
        timeout=WAIT,
        what="all three deliveries to be acked",
    )
    assert sorted(outcomes) == ["duplicate", "duplicate", "placed"]
    assert len(ledger_entries(db, "tenant-e2e", payload["client_intent_id"])) == 1
    paper = (
        db.collection("tenants", "tenant-e2e", "paper_orders")
        .document(payload_client_order_id(payload))
        .get()
    )
    assert paper.exists


def dead_letter(db: firestore.Client, message_id: str) -> dict[str, Any] | None:
    snap = db.collection("execution_dead_letters").document(message_id).get()
    return snap.to_dict() if snap.exists else None


VALID = intent()


MALFORMED: dict[str, tuple[dict[str, Any] | bytes, str]] = {
    "not json": (b"{not json", "not JSON"),
    "not an object": (b"[1, 2]", "JSON object"),
    "path in an id": ({**VALID, "client_intent_id": "../../ops/x"}, "client_intent_id"),
    "reserved id": ({**VALID, "tenant_id": "__tenant__"}, "tenant_id"),
    "missing field": ({k: v for k, v in VALID.items() if k != "side"}, "side"),
    "negative qty": ({**VALID, "qty": -5}, "qty"),
    "unknown field": ({**VALID, "dryrun": True}, "dryrun"),
}


def test_malformed_payloads_are_dead_lettered_with_their_reason_acked_and_not_redelivered(
    channel: PushChannel, server: FunctionsServer, db: firestore.Client
) -> None:
    sent = {label: channel.publish(data) for label, (data, _) in MALFORMED.items()}

    letters = {
        label: wait_until(
            lambda m=message_id: dead_letter(db, m), timeout=WAIT, what=f"the dead letter: {label}"
        )
        for label, message_id in sent.items()
    }
    # Acked, not retried: a later message goes through, and the subscription's whole retry
    # window then passes without a second delivery of any bad one.
    follower = channel.publish(intent())
    wait_until(lambda: acked(server, follower), timeout=WAIT, what="a later message's ack")
    time.sleep(3 * channel.redelivery_interval_seconds)
    for label, (_, reason_part) in MALFORMED.items():
        assert reason_part in letters[label]["reason"], label
        assert deliveries(server, sent[label]) == 1, label
    assert reservation_doc(db, VALID) is None
