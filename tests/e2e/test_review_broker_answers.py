"""Review, end to end: an order answered with another order's fields is recorded as the broker
holds it, never as the answer said.

The function runs with `BROKER=alpaca` against the loopback Alpaca sandbox, behind the Pub/Sub
emulator's push. The sandbox takes the order, then answers as a proxy or a cache answering for
another request would: another order (its id and its quantity, symbol or client order id). The
delivery must be retried as "outcome unknown", and the redelivery's lookup by client order id
must record the order the sandbox holds: one order, recorded with its own id. (An answer that
differs in its id alone cannot be told from ours here: the reconciler compares order ids.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.cloud import firestore

from devtools import alpaca_sandbox
from devtools.alpaca_sandbox import AlpacaSandbox
from devtools.functions_server import FunctionsServer
from devtools.pubsub import PushChannel
from tests.support.builders import payload_client_order_id, unique
from tests.support.waiting import wait_until

WAIT = 60.0  # a bound against a hang; each wait returns as soon as its state is reached
TENANT = "tenant-review-answers"


@pytest.fixture(scope="module")
def broker() -> Iterator[AlpacaSandbox]:
    with AlpacaSandbox() as server:
        yield server


@pytest.fixture
def server(
    firestore_project: str, firestore_emulator_host: str, broker: AlpacaSandbox, tmp_path: Path
) -> Iterator[FunctionsServer]:
    env = {
        "GOOGLE_CLOUD_PROJECT": firestore_project,
        "FIRESTORE_EMULATOR_HOST": firestore_emulator_host,
        "BROKER": "alpaca",
        "APCA_API_KEY_ID": alpaca_sandbox.KEY_ID,
        "APCA_API_SECRET_KEY": alpaca_sandbox.SECRET_KEY,
        "APCA_API_BASE_URL": broker.base_url,
        "AGENT_MODE": "LIVE",  # a loopback Alpaca is not Alpaca's paper host
        "FUNCTION_TIMEOUT_SECONDS": "4",
        "RESERVATION_TTL_SECONDS": "6",
        "CLOCK_SKEW_SECONDS": "0.5",
        "BROKER_TIMEOUT_SECONDS": "1",
        "FIRESTORE_TIMEOUT_SECONDS": "2",
    }
    functions = FunctionsServer(
        "execute_intent_push", "http", env=env, log_path=tmp_path / "execute_intent.log"
    )
    functions.start()
    yield functions
    functions.kill()


def placed(db: firestore.Client, payload: dict[str, Any]) -> dict[str, Any] | None:
    snap = (
        db.collection("tenants", TENANT, "execution_reservations")
        .document(payload["client_intent_id"])
        .get()
    )
    doc = snap.to_dict() or {} if snap.exists else {}
    return doc if (doc.get("status"), doc.get("outcome")) == ("released", "placed") else None


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"id": "not-the-order-the-broker-holds", "qty": "7"}, id="another quantity"),
        pytest.param(
            {"id": "not-the-order-the-broker-holds", "symbol": "MSFT"}, id="another symbol"
        ),
        pytest.param(
            {"id": "not-the-order-the-broker-holds", "client_order_id": "ex1-1-x-1-y-z"},
            id="another client order id",
        ),
    ],
)
def test_an_order_answered_as_another_is_recorded_as_the_broker_holds_it(
    channel: PushChannel, broker: AlpacaSandbox, db: firestore.Client, changes: dict[str, str]
) -> None:
    payload = {
        "tenant_id": TENANT,
        "broker_account_id": unique("acct"),
        "client_intent_id": unique("intent"),
        "symbol": "AAPL",
        "side": "buy",
        "qty": 1,
        "order_type": "limit",
        "limit_price": 100.0,
    }
    broker.inject_for_order(
        payload_client_order_id(payload), alpaca_sandbox.changed_after_accept(**changes)
    )

    channel.publish(payload)

    doc = wait_until(lambda: placed(db, payload), timeout=WAIT, what="the order to be recorded")
    held = broker.orders[payload_client_order_id(payload)]
    assert doc["broker_order_id"] == held["id"]  # found by a later attempt's lookup
    assert doc["attempt"] >= 2
    assert broker.posted_client_order_ids().count(payload_client_order_id(payload)) == 1
