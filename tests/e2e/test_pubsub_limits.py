"""Account limits end to end: Pub/Sub emulator → push → functions-framework → Firestore.

A malformed limit on the account document must end the intent (`rejected`,
`risk_data_unavailable`, acked), never raise on every delivery until Pub/Sub gives up; an intent
over a limit that can never pass is acked `rejected` with the limit's name.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.cloud import firestore

from devtools.functions_server import FunctionsServer
from devtools.pubsub import PushChannel
from tests.support.builders import unique
from tests.support.waiting import wait_until

WAIT = 60.0  # a bound against a hang; each wait returns as soon as its state is reached
TENANT = "tenant-e2e-limits"


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
            "FUNCTION_TIMEOUT_SECONDS": "4",
            # A paper broker call may take FIRESTORE_TIMEOUT_SECONDS: the lease leaves room for it.
            "RESERVATION_TTL_SECONDS": "12",
            "FIRESTORE_TIMEOUT_SECONDS": "5",
            "CLOCK_SKEW_SECONDS": "0.5",
        },
        log_path=Path(tmp_path_factory.mktemp("functions")) / "execute_intent.log",
    )
    functions.start()
    yield functions
    functions.kill()


def intent_for(db: firestore.Client, account: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """A limit buy for a fresh account whose document holds `account`."""
    payload: dict[str, Any] = {
        "tenant_id": TENANT,
        "broker_account_id": unique("acct"),
        "client_intent_id": unique("intent"),
        "symbol": "AAPL",
        "side": "buy",
        "qty": 3,
        "order_type": "limit",
        "limit_price": 150.0,
        **overrides,
    }
    db.collection("tenants", TENANT, "accounts").document(payload["broker_account_id"]).set(account)
    return payload


def acked(server: FunctionsServer, message_id: str) -> list[dict[str, Any]]:
    return [e for e in server.events("exec.delivery.acked") if e["message_id"] == message_id]


def settled(db: firestore.Client, payload: dict[str, Any]) -> tuple[str, str, str] | None:
    snap = (
        db.collection("tenants", TENANT, "execution_reservations")
        .document(payload["client_intent_id"])
        .get()
    )
    doc = snap.to_dict() if snap.exists else None
    return (doc["status"], doc["outcome"], doc["error"]) if doc else None


@pytest.mark.parametrize(
    "account", [{"max_inflight_usd": "10k"}, {"max_position_qty": "ten", "max_inflight_usd": 1e6}]
)
def test_a_malformed_account_limit_is_acked_rejected_not_retried_forever(
    channel: PushChannel, server: FunctionsServer, db: firestore.Client, account: dict[str, Any]
) -> None:
    payload = intent_for(db, account)

    message_id = channel.publish(payload)

    [ack] = wait_until(lambda: acked(server, message_id), timeout=WAIT, what="the ack")
    assert ack["outcome"] == "rejected"
    assert settled(db, payload) == ("released", "rejected", "risk_data_unavailable")
    assert (
        not db.collection("tenants", TENANT, "paper_orders")
        .document(payload["client_intent_id"])
        .get()
        .exists
    )


def test_an_order_worth_more_than_its_declared_notional_is_capped_at_its_worth(
    channel: PushChannel, server: FunctionsServer, db: firestore.Client
) -> None:
    payload = intent_for(
        db, {"max_order_notional_usd": 10000.0}, qty=1000, limit_price=100.0, notional_usd=1.0
    )

    message_id = channel.publish(payload)

    [ack] = wait_until(lambda: acked(server, message_id), timeout=WAIT, what="the ack")
    assert ack["outcome"] == "rejected"
    assert settled(db, payload) == (
        "released",
        "rejected",
        "max_order_notional_exceeded: 100000 > 10000 USD",
    )
