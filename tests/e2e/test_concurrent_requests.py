"""Many requests at once in one instance: one functions-framework server, concurrent pushes.

Cloud Run functions with `--concurrency` above 1 hand one instance several requests at once;
functions-framework serves them on gunicorn threads (`THREADS`) of one process, which share the
service built once per instance: its Firestore client, the shared read of quotes and kill
switches, the broker, the settings. What each invocation binds to its log lines must stay its
own, and every limit must hold while intents of one account run side by side.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from google.cloud import firestore

from devtools.functions_server import FunctionsServer
from execution.telemetry import TRACE_FIELD
from tests.support.builders import unique
from tests.support.events import now_rfc3339

SHARED_READ_MAX_AGE_SECONDS = 0.5
"""How long the instance reuses its read of the kill switches (the deployed default is 1 s)."""
CONCURRENCY = 16
"""Requests in flight at once, and the server's threads (the deploy default's order)."""
MAX_DELIVERIES = 40
"""Pub/Sub redelivers a retried message; a bound against a hang, never reached when all is well."""
TENANT = "tenant-concurrent"


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
            "THREADS": str(CONCURRENCY),  # functions-framework's gunicorn threads per instance
            "SHARED_READ_MAX_AGE_SECONDS": str(SHARED_READ_MAX_AGE_SECONDS),
        },
        log_path=Path(tmp_path_factory.mktemp("functions")) / "execute_intent.log",
    )
    functions.start()
    yield functions
    functions.kill()


def push_until_acked(server: FunctionsServer, payload: dict[str, Any], trace_id: str) -> str:
    """POST the push body, again after every retry answer (as Pub/Sub would); its message id."""
    message_id = unique("msg")
    body = {
        "message": {
            "data": base64.b64encode(json.dumps(payload).encode()).decode(),
            "messageId": message_id,
            "publishTime": now_rfc3339(),
            "attributes": {},
        },
        "subscription": "projects/demo/subscriptions/intents",
    }
    request = urllib.request.Request(
        server.url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01",
        },
    )
    for delivery in range(MAX_DELIVERIES):
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                assert response.status == 200
                return message_id
        except urllib.error.HTTPError as error:
            assert error.code == 500, error.read()
        time.sleep(0.05 * min(delivery + 1, 10))  # Pub/Sub's backoff, shortened
    raise AssertionError(f"{message_id} was not acked in {MAX_DELIVERIES} deliveries")


def all_at_once(count: int, push_one: Callable[[int], str]) -> list[str]:
    """`push_one(i)` for every i, `CONCURRENCY` at a time, started together."""
    start = threading.Barrier(min(count, CONCURRENCY))

    def pushed(index: int) -> str:
        if index < CONCURRENCY:
            start.wait(timeout=60)
        return push_one(index)

    with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
        return list(pool.map(pushed, range(count)))


def intent(account: str, **overrides: Any) -> dict[str, Any]:
    return {
        "tenant_id": TENANT,
        "broker_account_id": account,
        "client_intent_id": unique("intent"),
        "symbol": "AAPL",
        "side": "buy",
        "qty": 1,
        "order_type": "limit",
        "limit_price": 10.0,
        **overrides,
    }


def reservation(db: firestore.Client, payload: dict[str, Any]) -> dict[str, Any]:
    document = (
        db.collection("tenants", payload["tenant_id"], "execution_reservations")
        .document(payload["client_intent_id"])
        .get()
    )
    return document.to_dict() or {}


def paper_orders(db: firestore.Client, account: str, tenant: str = TENANT) -> list[dict[str, Any]]:
    orders = db.collection("tenants", tenant, "paper_orders")
    return [
        snapshot.to_dict() or {}
        for snapshot in orders.where(
            filter=firestore.FieldFilter("broker_account_id", "==", account)
        ).stream()
    ]


def test_concurrent_requests_keep_each_intents_ids_on_its_own_log_lines(
    server: FunctionsServer, db: firestore.Client, firestore_project: str
) -> None:
    accounts = [unique("acct") for _ in range(4)]
    payloads = [intent(accounts[n % len(accounts)]) for n in range(2 * CONCURRENCY)]
    traces = [uuid.uuid4().hex for _ in payloads]

    message_ids = all_at_once(
        len(payloads), lambda n: push_until_acked(server, payloads[n], traces[n])
    )

    lines = server.events()
    for payload, trace, message_id in zip(payloads, traces, message_ids, strict=True):
        trace_field = f"projects/{firestore_project}/traces/{trace}"
        mine = [line for line in lines if line.get(TRACE_FIELD) == trace_field]
        acked = [line for line in mine if line.get("event") == "exec.delivery.acked"]
        assert [line["outcome"] for line in acked] == ["placed"], payload["client_intent_id"]
        assert {"exec.delivery.received", "exec.reservation.acquired"} <= {
            line["event"] for line in mine
        }
        for line in mine:
            assert line["client_intent_id"] == payload["client_intent_id"], line
            assert line["broker_account_id"] == payload["broker_account_id"], line
            assert line["message_id"] == message_id, line
        theirs = [
            line
            for line in lines
            if line.get("client_intent_id") == payload["client_intent_id"]
            and line.get(TRACE_FIELD) != trace_field
        ]
        assert theirs == []
    for payload in payloads:
        assert reservation(db, payload)["status"] == "released"
        assert reservation(db, payload)["outcome"] == "placed"
    for account in accounts:
        placed = [p for p in payloads if p["broker_account_id"] == account]
        orders = paper_orders(db, account)
        assert sorted(o["client_order_id"] for o in orders) == sorted(
            reservation(db, p)["client_order_id"] for p in placed
        )


def test_concurrent_intents_of_one_account_never_pass_its_daily_order_limit(
    server: FunctionsServer, db: firestore.Client
) -> None:
    account = unique("acct")
    limit = 5
    db.collection("tenants", TENANT, "accounts").document(account).set(
        {"max_daily_orders": limit, "max_inflight_usd": 1_000_000.0}
    )
    payloads = [intent(account) for _ in range(3 * CONCURRENCY)]

    all_at_once(len(payloads), lambda n: push_until_acked(server, payloads[n], uuid.uuid4().hex))

    records = [reservation(db, p) for p in payloads]
    outcomes = [(r["status"], r["outcome"], (r["error"] or "").split(":")[0]) for r in records]
    assert outcomes.count(("released", "placed", "")) == limit
    assert (
        outcomes.count(("released", "rejected", "max_daily_orders_reached"))
        == len(payloads) - limit
    )
    assert len(paper_orders(db, account)) == limit
    state = db.collection("tenants", TENANT, "execution_inflight").document(account).get()
    assert (state.to_dict() or {}).get("leases") == {}


def test_a_kill_switch_turned_on_halts_every_concurrent_request_once_the_shared_read_is_old(
    server: FunctionsServer, db: firestore.Client
) -> None:
    tenant, account = unique("tenant"), unique("acct")
    switch = db.collection("tenants", tenant, "ops").document("execution_kill_switch")
    switch.set({"enabled": False})
    before = [intent(account, tenant_id=tenant) for _ in range(CONCURRENCY)]
    all_at_once(len(before), lambda n: push_until_acked(server, before[n], uuid.uuid4().hex))
    switch.set({"enabled": True})
    # The contract: an instance reuses its read of the switch for at most this long.
    time.sleep(SHARED_READ_MAX_AGE_SECONDS + 0.5)
    after = [intent(account, tenant_id=tenant) for _ in range(2 * CONCURRENCY)]

    all_at_once(len(after), lambda n: push_until_acked(server, after[n], uuid.uuid4().hex))

    assert [reservation(db, p)["outcome"] for p in before] == ["placed"] * len(before)
    assert [reservation(db, p)["outcome"] for p in after] == ["halted"] * len(after)
    assert len(paper_orders(db, account, tenant)) == len(before)
