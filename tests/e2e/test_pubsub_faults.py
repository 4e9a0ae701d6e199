"""End to end with faults at the real boundaries: an HTTP broker that fails, a killed instance.

The function runs with `BROKER=alpaca` against a loopback server speaking Alpaca's API (the orders
it holds are the ground truth for "exactly one order"), behind the Pub/Sub emulator's push.
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

TTL_SECONDS = 6.0
WAIT = 60.0  # a bound against a hang; each wait returns as soon as its state is reached
TENANT = "tenant-faults"


@pytest.fixture(scope="module")
def broker() -> Iterator[AlpacaSandbox]:
    with AlpacaSandbox() as server:
        yield server


def function_env(project: str, emulator: str, broker: AlpacaSandbox) -> dict[str, str]:
    return {
        "GOOGLE_CLOUD_PROJECT": project,
        "FIRESTORE_EMULATOR_HOST": emulator,
        "BROKER": "alpaca",
        "APCA_API_KEY_ID": alpaca_sandbox.KEY_ID,
        "APCA_API_SECRET_KEY": alpaca_sandbox.SECRET_KEY,
        "APCA_API_BASE_URL": broker.base_url,
        # A loopback Alpaca is not Alpaca's paper host, so only LIVE may reach it.
        "AGENT_MODE": "LIVE",
        "FUNCTION_TIMEOUT_SECONDS": "4",
        "RESERVATION_TTL_SECONDS": str(TTL_SECONDS),
        "CLOCK_SKEW_SECONDS": "0.5",
        "BROKER_TIMEOUT_SECONDS": "1",
        "FIRESTORE_TIMEOUT_SECONDS": "2",
    }


@pytest.fixture
def server(
    firestore_project: str,
    firestore_emulator_host: str,
    broker: AlpacaSandbox,
    tmp_path: Path,
) -> Iterator[FunctionsServer]:
    functions = FunctionsServer(
        "execute_intent_push",
        "http",
        env=function_env(firestore_project, firestore_emulator_host, broker),
        log_path=tmp_path / "execute_intent.log",
    )
    functions.start()
    yield functions
    functions.kill()


def intent(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "tenant_id": TENANT,
        "broker_account_id": unique("acct"),
        "client_intent_id": unique("intent"),
        "symbol": "AAPL",
        "side": "buy",
        "qty": 1,
        "order_type": "limit",
        "limit_price": 100.0,
    }
    payload.update(overrides)
    return payload


def reservation(db: firestore.Client, payload: dict[str, Any]) -> dict[str, Any]:
    snap = (
        db.collection("tenants", TENANT, "execution_reservations")
        .document(payload["client_intent_id"])
        .get()
    )
    return snap.to_dict() or {} if snap.exists else {}


def placed(db: firestore.Client, payload: dict[str, Any]) -> dict[str, Any] | None:
    """The reservation once released as placed (earlier attempts may release as `exception`)."""
    doc = reservation(db, payload)
    return doc if (doc.get("status"), doc.get("outcome")) == ("released", "placed") else None


def orders_for(broker: AlpacaSandbox, payload: dict[str, Any]) -> int:
    return sum(1 for coid in broker.orders if coid == payload_client_order_id(payload))


def test_a_transient_broker_error_is_redelivered_and_places_exactly_one_order(
    channel: PushChannel, broker: AlpacaSandbox, db: firestore.Client
) -> None:
    payload = intent()
    broker.inject("POST", alpaca_sandbox.status(503, "service unavailable"))

    channel.publish(payload)

    doc = wait_until(lambda: placed(db, payload), timeout=WAIT, what="the order to be placed")
    assert doc["attempt"] == 2
    assert orders_for(broker, payload) == 1
    assert broker.posted_client_order_ids().count(payload_client_order_id(payload)) == 2


@pytest.mark.parametrize("refusal", [401, 403])
def test_a_refused_lookup_after_an_accepted_order_is_retried_never_dead_lettered(
    channel: PushChannel, broker: AlpacaSandbox, db: firestore.Client, refusal: int
) -> None:
    payload = intent()
    broker.inject("POST", alpaca_sandbox.status(503, "upstream unavailable", accept=True))
    broker.inject("GET", alpaca_sandbox.status(refusal, "forbidden"))

    message_id = channel.publish(payload)

    doc = wait_until(lambda: placed(db, payload), timeout=WAIT, what="the order to be recorded")
    assert doc["attempt"] == 3
    assert doc["broker_order_id"] == broker.orders[payload_client_order_id(payload)]["id"]
    assert orders_for(broker, payload) == 1
    assert not db.collection("execution_dead_letters").document(message_id).get().exists


def test_a_broker_timeout_after_accepting_is_resolved_through_the_same_client_order_id(
    channel: PushChannel, broker: AlpacaSandbox, db: firestore.Client
) -> None:
    payload = intent()
    broker.inject("POST", alpaca_sandbox.hang_after_accept(seconds=3))

    channel.publish(payload)

    doc = wait_until(lambda: placed(db, payload), timeout=WAIT, what="the order to be placed")
    assert doc["attempt"] == 2
    assert doc["broker_order_id"] == broker.orders[payload_client_order_id(payload)]["id"]
    assert orders_for(broker, payload) == 1


def test_a_killed_instance_mid_broker_call_never_places_twice_and_never_blocks_the_account(
    channel: PushChannel, server: FunctionsServer, broker: AlpacaSandbox, db: firestore.Client
) -> None:
    account = unique("acct")
    db.collection("tenants", TENANT, "accounts").document(account).set({"max_inflight_usd": 100.0})
    doomed = intent(broker_account_id=account)
    blocked = intent(broker_account_id=account)
    broker.inject("POST", alpaca_sandbox.hang_after_accept(seconds=WAIT))
    channel.publish(doomed)
    wait_until(
        lambda: payload_client_order_id(doomed) in broker.orders,
        timeout=WAIT,
        what="the order to reach the broker",
    )

    server.kill()
    left_behind = reservation(db, doomed)
    channel.publish(blocked)
    server.restart()

    unblocked = wait_until(lambda: placed(db, blocked), timeout=WAIT, what="the blocked to trade")
    doc = wait_until(lambda: placed(db, doomed), timeout=WAIT, what="the redelivered intent")
    assert left_behind["status"] == "reserved"
    assert doc["attempt"] == 2
    assert doc["broker_order_id"] == broker.orders[payload_client_order_id(doomed)]["id"]
    assert orders_for(broker, doomed) == 1
    # The dead lease blocked the account until it expired, and only until then: the blocked
    # intent took its lease after that expiry and traded (a wall-clock bound on how soon would
    # measure the machine's load; the expiry rule itself is tested on the emulator).
    assert unblocked["created_at"] >= left_behind["expires_at"]


def recorded(db: firestore.Client, payload: dict[str, Any]) -> dict[str, Any] | None:
    """The reservation once released with a terminal outcome."""
    doc = reservation(db, payload)
    terminal = doc.get("outcome") in {"placed", "rejected", "halted", "stale", "dry_run"}
    return doc if doc.get("status") == "released" and terminal else None


def test_an_order_whose_answer_was_lost_keeps_counting_against_the_daily_limit_until_found(
    channel: PushChannel, broker: AlpacaSandbox, db: firestore.Client
) -> None:
    account = unique("acct")
    db.collection("tenants", TENANT, "accounts").document(account).set({"max_daily_orders": 1})
    lost = intent(broker_account_id=account)
    second = intent(broker_account_id=account)
    # The broker takes the order and its answer never comes in time; then the redeliveries'
    # lookups fail for a while, so the order's fate stays unknown across several attempts.
    broker.inject("POST", alpaca_sandbox.hang_after_accept(seconds=3))
    broker.inject("GET", *[alpaca_sandbox.status(503, "upstream unavailable")] * 3)

    channel.publish(lost)
    # Published together, either could reach the broker first and take the lost answer: the
    # second goes out once the broker holds the first's order, while its fate is unknown.
    wait_until(lambda: orders_for(broker, lost), timeout=WAIT, what="the broker to take the first")
    channel.publish(second)

    found = wait_until(lambda: placed(db, lost), timeout=WAIT, what="the lost order to be found")
    refused = wait_until(lambda: recorded(db, second), timeout=WAIT, what="the second to end")
    ours = {payload_client_order_id(lost), payload_client_order_id(second)}
    assert found["broker_order_id"] == broker.orders[payload_client_order_id(lost)]["id"]
    assert (refused["outcome"], refused["error"]) == (
        "rejected",
        "max_daily_orders_reached: 1 of 1 used today (UTC)",
    )
    assert sum(1 for coid in broker.orders if coid in ours) == 1
