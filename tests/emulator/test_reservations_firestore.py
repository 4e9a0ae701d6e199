"""The reservation state machine against the real Firestore emulator (no mocked client)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from google.cloud import firestore

from execution.clock import FakeClock
from execution.errors import (
    BudgetWaitError,
    PayloadConflictError,
    ReservationInFlightError,
    RetryableError,
)
from execution.firestore.reservations import FirestoreReservationManager, inflight_ref
from execution.models import Outcome
from execution.reservations import Acquired, AlreadyExecuted, ReservationRequest
from tests.support.builders import FAST_POLICY, unique

TTL = timedelta(seconds=30)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def manager(db: firestore.Client, clock: FakeClock) -> FirestoreReservationManager:
    return FirestoreReservationManager(db, clock=clock, ttl=TTL, policy=FAST_POLICY)


def request_for(**overrides: Any) -> ReservationRequest:
    fields: dict[str, Any] = {
        "tenant_id": "tenant-r",
        "broker_account_id": unique("acct"),
        "client_intent_id": unique("intent"),
        "symbol": "AAPL",
        "amount_usd": 100.0,
        "payload_hash": "hash-1",
    }
    fields.update(overrides)
    return ReservationRequest(**fields)


def stored(db: firestore.Client, request: ReservationRequest) -> dict[str, Any]:
    snap = (
        db.collection("tenants", request.tenant_id, "execution_reservations")
        .document(request.client_intent_id)
        .get()
    )
    assert snap.exists
    return snap.to_dict() or {}


def set_budget(db: firestore.Client, request: ReservationRequest, max_inflight_usd: float) -> None:
    db.collection("tenants", request.tenant_id, "accounts").document(request.broker_account_id).set(
        {"max_inflight_usd": max_inflight_usd}
    )


def acquired(result: object) -> Acquired:
    assert isinstance(result, Acquired), result
    return result


def run_concurrently(calls: list[Callable[[], object]]) -> list[object]:
    """Run every call at once (released by a barrier); each result or raised exception."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], object]) -> object:
        barrier.wait()
        try:
            return call()
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(run, call) for call in calls]
        # A bound against a hang, not a performance assertion.
        return [future.result(timeout=60) for future in futures]


def test_first_acquire_creates_a_reserved_document_with_the_contract_fields(
    db: firestore.Client, manager: FirestoreReservationManager, clock: FakeClock
) -> None:
    request = request_for()

    handle = acquired(manager.acquire(request)).handle

    doc = stored(db, request)
    assert doc["status"] == "reserved"
    assert doc["lease_id"] == handle.lease_id
    assert doc["attempt"] == 1
    assert doc["expires_at"] == clock() + TTL
    for name in (
        "tenant_id",
        "broker_account_id",
        "client_intent_id",
        "symbol",
        "amount_usd",
        "created_at",
        "released_at",
        "outcome",
        "error",
        "broker_order_id",
        "payload_hash",
    ):
        assert name in doc


def test_release_records_the_outcome_and_ends_the_lease(
    db: firestore.Client, manager: FirestoreReservationManager
) -> None:
    request = request_for()
    handle = acquired(manager.acquire(request)).handle

    handle.release(Outcome.PLACED, broker_order_id="order-1")

    doc = stored(db, request)
    assert (doc["status"], doc["outcome"], doc["broker_order_id"]) == (
        "released",
        "placed",
        "order-1",
    )
    assert doc["released_at"] is not None


def test_a_second_release_changes_nothing(
    db: firestore.Client, manager: FirestoreReservationManager
) -> None:
    request = request_for()
    handle = acquired(manager.acquire(request)).handle
    handle.release(Outcome.REJECTED, error="risk")
    first = stored(db, request)

    handle.release(Outcome.PLACED, broker_order_id="late")

    assert stored(db, request) == first


def test_twenty_concurrent_acquires_of_one_intent_let_exactly_one_execute(
    manager: FirestoreReservationManager,
) -> None:
    request = request_for()

    results = run_concurrently([lambda: manager.acquire(request)] * 20)

    winners = [r for r in results if isinstance(r, Acquired)]
    losers = [r for r in results if not isinstance(r, Acquired)]
    assert len(winners) == 1
    assert all(isinstance(r, RetryableError) for r in losers), losers


def test_a_live_lease_makes_the_next_delivery_retry(
    manager: FirestoreReservationManager,
) -> None:
    request = request_for()
    manager.acquire(request)

    with pytest.raises(ReservationInFlightError):
        manager.acquire(request)


def test_thirty_concurrent_acquires_on_a_budgeted_account_never_commit_more_than_it(
    db: firestore.Client, manager: FirestoreReservationManager
) -> None:
    account = unique("acct")
    requests = [request_for(broker_account_id=account) for _ in range(30)]
    set_budget(db, requests[0], 1000.0)
    inflight = inflight_ref(db, "tenant-r", account)
    seen_sums: list[float] = []
    racing = threading.Event()

    def watch() -> None:
        # Checked continuously while the race runs, not only at the end.
        while not racing.is_set():
            snap = inflight.get()
            leases = (snap.to_dict() or {}).get("leases", {}) if snap.exists else {}
            seen_sums.append(sum(lease["amount_usd"] for lease in leases.values()))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        results = run_concurrently([lambda r=r: manager.acquire(r) for r in requests])
    finally:
        racing.set()
        watcher.join()

    winners = [r for r in results if isinstance(r, Acquired)]
    losers = [r for r in results if not isinstance(r, Acquired)]
    reserved = [stored(db, r) for r in requests if isinstance(results[requests.index(r)], Acquired)]
    assert 1 <= len(winners) <= 10
    assert sum(doc["amount_usd"] for doc in reserved) <= 1000.0
    assert max(seen_sums) <= 1000.0
    assert all(isinstance(r, RetryableError) for r in losers), losers


def test_a_burst_on_one_budgeted_account_reserves_within_the_invocations_at_default_attempts(
    db: firestore.Client, manager: FirestoreReservationManager
) -> None:
    account = unique("acct")
    requests = [request_for(broker_account_id=account) for _ in range(48)]
    set_budget(db, requests[0], 1e9)  # room for all: only the in-flight document is contended

    results = run_concurrently([lambda r=r: manager.acquire(r) for r in requests])

    # Every one reserved now: none left to a redelivery (a minute or more on real Pub/Sub).
    assert [type(r).__name__ for r in results if not isinstance(r, Acquired)] == []
    leases = (inflight_ref(db, "tenant-r", account).get().to_dict() or {})["leases"]
    assert len(leases) == 48


def test_waiting_intents_fit_once_the_budget_frees_up(
    db: firestore.Client, manager: FirestoreReservationManager
) -> None:
    account = unique("acct")
    first, second = request_for(broker_account_id=account), request_for(broker_account_id=account)
    set_budget(db, first, 150.0)
    handle = acquired(manager.acquire(first)).handle
    with pytest.raises(BudgetWaitError):
        manager.acquire(second)

    handle.release(Outcome.PLACED)

    assert isinstance(manager.acquire(second), Acquired)


def test_an_expired_reservation_stops_counting_against_the_budget_before_any_sweep(
    db: firestore.Client, manager: FirestoreReservationManager, clock: FakeClock
) -> None:
    account = unique("acct")
    dead, waiting = request_for(broker_account_id=account), request_for(broker_account_id=account)
    set_budget(db, dead, 100.0)
    manager.acquire(dead)  # its invocation dies: never released, never swept
    with pytest.raises(BudgetWaitError):
        manager.acquire(waiting)

    clock.advance(TTL.total_seconds() + 1)

    assert isinstance(manager.acquire(waiting), Acquired)
    assert stored(db, dead)["status"] == "reserved"


def test_an_expired_lease_is_taken_over_with_the_next_attempt(
    db: firestore.Client, manager: FirestoreReservationManager, clock: FakeClock
) -> None:
    request = request_for()
    old = acquired(manager.acquire(request)).handle
    clock.advance(TTL.total_seconds() + 1)

    new = acquired(manager.acquire(request)).handle

    doc = stored(db, request)
    assert new.attempt == 2
    assert doc["attempt"] == 2
    assert doc["lease_id"] == new.lease_id != old.lease_id
    assert doc["status"] == "reserved"


def test_a_late_release_by_the_old_lease_changes_nothing(
    db: firestore.Client, manager: FirestoreReservationManager, clock: FakeClock
) -> None:
    request = request_for()
    old = acquired(manager.acquire(request)).handle
    clock.advance(TTL.total_seconds() + 1)
    acquired(manager.acquire(request))
    before = stored(db, request)

    old.release(Outcome.EXCEPTION, error="zombie woke up")

    assert stored(db, request) == before


def test_a_late_release_cannot_free_budget_held_by_the_new_lease(
    db: firestore.Client, manager: FirestoreReservationManager, clock: FakeClock
) -> None:
    account = unique("acct")
    request, other = request_for(broker_account_id=account), request_for(broker_account_id=account)
    set_budget(db, request, 100.0)
    old = acquired(manager.acquire(request)).handle
    clock.advance(TTL.total_seconds() + 1)
    acquired(manager.acquire(request))

    old.release(Outcome.EXCEPTION)

    with pytest.raises(BudgetWaitError):
        manager.acquire(other)


@pytest.mark.parametrize("outcome", ["placed", "rejected", "dry_run", "halted", "stale"])
def test_a_terminal_outcome_makes_the_next_delivery_a_duplicate(
    manager: FirestoreReservationManager, outcome: str
) -> None:
    request = request_for()
    acquired(manager.acquire(request)).handle.release(Outcome(outcome), broker_order_id="o-1")

    again = manager.acquire(request)

    assert isinstance(again, AlreadyExecuted)
    assert again.record.outcome == Outcome(outcome)
    assert again.record.broker_order_id == "o-1"


def test_a_retryable_outcome_is_reacquired_with_the_next_attempt(
    db: firestore.Client, manager: FirestoreReservationManager
) -> None:
    request = request_for()
    acquired(manager.acquire(request)).handle.release(Outcome.EXCEPTION, error="broker 503")

    again = acquired(manager.acquire(request)).handle

    assert again.attempt == 2
    assert stored(db, request)["status"] == "reserved"


def test_the_same_id_with_a_different_payload_is_refused_permanently(
    db: firestore.Client, manager: FirestoreReservationManager
) -> None:
    request = request_for()
    acquired(manager.acquire(request)).handle.release(Outcome.PLACED)
    before = stored(db, request)
    changed = request_for(
        broker_account_id=request.broker_account_id,
        client_intent_id=request.client_intent_id,
        payload_hash="hash-2",
    )

    with pytest.raises(PayloadConflictError):
        manager.acquire(changed)

    assert stored(db, request) == before


def test_release_sets_purge_at_one_retention_after_release(
    db: firestore.Client, manager: FirestoreReservationManager, clock: FakeClock
) -> None:
    request = request_for()
    handle = acquired(manager.acquire(request)).handle
    assert stored(db, request)["purge_at"] is None

    handle.release(Outcome.PLACED)

    doc = stored(db, request)
    assert doc["purge_at"] == doc["released_at"] + timedelta(days=30)


def test_a_reacquired_reservation_loses_its_purge_at(
    db: firestore.Client, manager: FirestoreReservationManager
) -> None:
    request = request_for()
    acquired(manager.acquire(request)).handle.release(Outcome.EXCEPTION)

    acquired(manager.acquire(request))

    assert stored(db, request)["purge_at"] is None
