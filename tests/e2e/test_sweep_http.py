"""`main.sweep_reservations` served by functions-framework, as Cloud Scheduler calls it."""

from __future__ import annotations

import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from google.cloud import firestore

from devtools.functions_server import FunctionsServer
from execution.clock import system_clock
from execution.firestore.reservations import FirestoreReservationManager
from execution.reservations import Acquired, ReservationRequest
from tests.support.builders import FAST_POLICY, unique
from tests.support.waiting import wait_until

LEASE = timedelta(seconds=1)


@pytest.fixture(scope="module")
def sweep_server(
    firestore_project: str, firestore_emulator_host: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FunctionsServer]:
    functions = FunctionsServer(
        "sweep_reservations",
        "http",
        env={
            "GOOGLE_CLOUD_PROJECT": firestore_project,
            "FIRESTORE_EMULATOR_HOST": firestore_emulator_host,
        },
        log_path=Path(tmp_path_factory.mktemp("functions")) / "sweep.log",
    )
    functions.start()
    yield functions
    functions.kill()


def abandoned_reservation(db: firestore.Client) -> str:
    """A lease whose invocation died and whose message never came back (dead-lettered)."""
    manager = FirestoreReservationManager(db, clock=system_clock, ttl=LEASE, policy=FAST_POLICY)
    request = ReservationRequest(
        tenant_id="tenant-sweep",
        broker_account_id="acct-1",
        client_intent_id=unique("orphan"),
        symbol="AAPL",
        amount_usd=10.0,
        payload_hash="h",
    )
    assert isinstance(manager.acquire(request), Acquired)
    return f"tenants/tenant-sweep/execution_reservations/{request.client_intent_id}"


def lapsed(db: firestore.Client, path: str) -> bool:
    doc = db.document(path).get().to_dict() or {}
    return bool(doc["expires_at"] < system_clock())


def test_a_reservation_whose_message_never_returns_is_expired_by_the_sweep(
    sweep_server: FunctionsServer, db: firestore.Client
) -> None:
    path = abandoned_reservation(db)
    wait_until(lambda: lapsed(db, path), timeout=10, what="the lease to lapse")

    status, report = sweep_server.post()

    doc = db.document(path).get().to_dict() or {}
    assert status == 200
    assert path in report["expired_ids"]
    assert (doc["status"], doc["outcome"]) == ("expired", "expired")
    assert sweep_server.events("exec.reservation.expired")[-1]["severity"] == "WARNING"


def test_two_sweeps_at_once_expire_it_once(
    sweep_server: FunctionsServer, db: firestore.Client
) -> None:
    path = abandoned_reservation(db)
    wait_until(lambda: lapsed(db, path), timeout=10, what="the lease to lapse")

    with ThreadPoolExecutor(2) as pool:
        answers: list[tuple[int, Any]] = list(pool.map(lambda _: sweep_server.post(), range(2)))

    assert [status for status, _ in answers] == [200, 200]
    assert sum(path in report["expired_ids"] for _, report in answers) == 1
    assert (db.document(path).get().to_dict() or {})["status"] == "expired"


def test_the_sweep_answers_only_post(sweep_server: FunctionsServer) -> None:
    status, _ = sweep_server.post(method="GET", body=b"")

    assert status == 405


def test_the_sweeps_log_lines_carry_the_trace_of_the_schedulers_request(
    sweep_server: FunctionsServer, firestore_project: str
) -> None:
    trace_id = uuid.uuid4().hex
    request = urllib.request.Request(
        sweep_server.url,
        data=b"{}",
        method="POST",
        headers={"Content-Type": "application/json", "X-Cloud-Trace-Context": f"{trace_id}/7;o=1"},
    )

    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 200

    [completed] = [
        e for e in sweep_server.events("exec.sweep.completed") if e.get("trace_id") == trace_id
    ]
    assert completed["logging.googleapis.com/trace"] == (
        f"projects/{firestore_project}/traces/{trace_id}"
    )
    assert completed["logging.googleapis.com/spanId"] == "0000000000000007"
