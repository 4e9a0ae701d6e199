"""The sweeper on the real Firestore emulator: it expires only lapsed leases, each exactly once."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Any

import pytest
from google.cloud import firestore

from execution.clock import FakeClock
from execution.firestore.reservations import FirestoreReservationManager, inflight_ref
from execution.firestore.sweeper_store import FirestoreExpiredLeases
from execution.models import Outcome
from execution.reservations import Acquired, ReservationHandle, ReservationRequest
from execution.sweeper import Sweeper, SweepReport
from tests.support.builders import FAST_POLICY, unique
from tests.unit.fakes import logged

TTL = timedelta(seconds=30)


@pytest.fixture(autouse=True)
def empty_project(reset_firestore: Any) -> None:
    """Sweeps are project-wide: start each test from an empty database."""


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def manager(db: firestore.Client, clock: FakeClock) -> FirestoreReservationManager:
    return FirestoreReservationManager(db, clock=clock, ttl=TTL, policy=FAST_POLICY)


def sweeper(db: firestore.Client, clock: FakeClock, page_size: int = 200) -> Sweeper:
    return Sweeper(FirestoreExpiredLeases(db, policy=FAST_POLICY), clock=clock, page_size=page_size)


def reserve(
    manager: FirestoreReservationManager, account: str | None = None
) -> tuple[ReservationRequest, ReservationHandle]:
    request = ReservationRequest(
        tenant_id="tenant-s",
        broker_account_id=account or unique("acct"),
        client_intent_id=unique("intent"),
        symbol="MSFT",
        amount_usd=50.0,
        payload_hash="h",
    )
    acquisition = manager.acquire(request)
    assert isinstance(acquisition, Acquired)
    return request, acquisition.handle


def status_of(db: firestore.Client, request: ReservationRequest) -> tuple[str, str | None]:
    doc = (
        db.collection("tenants", request.tenant_id, "execution_reservations")
        .document(request.client_intent_id)
        .get()
        .to_dict()
        or {}
    )
    return doc["status"], doc["outcome"]


def test_a_lapsed_lease_is_expired_and_a_live_one_is_left_alone(
    db: firestore.Client, manager: FirestoreReservationManager, clock: FakeClock
) -> None:
    lapsed, _ = reserve(manager)
    clock.advance(TTL.total_seconds() + 1)
    live, _ = reserve(manager)

    report = sweeper(db, clock).sweep()

    assert (report.scanned, report.expired, report.errors) == (1, 1, 0)
    assert report.oldest_age_seconds == pytest.approx(1.0)
    assert status_of(db, lapsed) == ("expired", "expired")
    assert status_of(db, live) == ("reserved", None)
    swept = (
        db.collection("tenants", "tenant-s", "execution_reservations")
        .document(lapsed.client_intent_id)
        .get()
        .to_dict()
        or {}
    )
    assert swept["purge_at"] == clock() + timedelta(days=30)


def test_released_reservations_are_never_swept(
    db: firestore.Client, manager: FirestoreReservationManager, clock: FakeClock
) -> None:
    request, handle = reserve(manager)
    handle.release(Outcome.PLACED)
    clock.advance(TTL.total_seconds() + 1)

    report = sweeper(db, clock).sweep()

    assert report.scanned == 0
    assert status_of(db, request) == ("released", "placed")


def test_two_sweeps_at_once_expire_each_lease_exactly_once(
    db: firestore.Client, manager: FirestoreReservationManager, clock: FakeClock
) -> None:
    requests = [reserve(manager)[0] for _ in range(12)]
    clock.advance(TTL.total_seconds() + 1)
    reports: list[SweepReport] = []
    barrier = threading.Barrier(2)

    def sweep() -> None:
        barrier.wait()
        reports.append(sweeper(db, clock, page_size=5).sweep())

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sum(report.expired for report in reports) == 12
    assert all(report.errors == 0 for report in reports)
    assert {status_of(db, r) for r in requests} == {("expired", "expired")}


def test_pagination_reaches_every_lapsed_lease(
    db: firestore.Client, manager: FirestoreReservationManager, clock: FakeClock
) -> None:
    for _ in range(7):
        reserve(manager)
    clock.advance(TTL.total_seconds() + 1)

    report = sweeper(db, clock, page_size=3).sweep()

    assert (report.expired, report.complete) == (7, True)


def test_a_sweep_racing_a_take_over_does_not_overwrite_the_new_lease(
    db: firestore.Client, manager: FirestoreReservationManager, clock: FakeClock
) -> None:
    request, _ = reserve(manager)
    clock.advance(TTL.total_seconds() + 1)
    store = FirestoreExpiredLeases(db, policy=FAST_POLICY)
    [seen] = store.find_expired(clock(), limit=10, after=None)
    assert isinstance(manager.acquire(request), Acquired)  # redelivery takes over first

    changed = store.expire(seen, clock())

    assert changed is False
    assert status_of(db, request) == ("reserved", None)


def test_expiry_leaves_the_hold_of_a_lease_whose_order_may_exist_but_frees_its_budget(
    db: firestore.Client, manager: FirestoreReservationManager, clock: FakeClock
) -> None:
    account = unique("acct")
    db.collection("tenants", "tenant-s", "accounts").document(account).set(
        {"max_inflight_usd": 50, "max_daily_orders": 2}
    )
    request, handle = reserve(manager, account)
    clock.advance(TTL.total_seconds() + 1)

    sweeper(db, clock).sweep()
    reserve(manager, account)  # the dead lease's 50 USD no longer count

    leases = (inflight_ref(db, "tenant-s", account).get().to_dict() or {}).get("leases") or {}
    assert handle.lease_id in leases  # the invocation may have died inside its broker call
    assert status_of(db, request) == ("expired", "expired")


def test_a_late_release_by_the_same_lease_records_its_outcome_over_expired(
    db: firestore.Client, manager: FirestoreReservationManager, clock: FakeClock
) -> None:
    request, handle = reserve(manager)
    clock.advance(TTL.total_seconds() + 1)
    sweeper(db, clock).sweep()

    handle.release(Outcome.PLACED, broker_order_id="o-late")

    assert status_of(db, request) == ("released", "placed")


MALFORMED_LEASES: dict[str, dict[str, Any]] = {
    "attempt null": {"attempt": None},
    "lease_id missing": {"lease_id": firestore.DELETE_FIELD},
    "tenant_id a number": {"tenant_id": 5},
    "attempt a string": {"attempt": "2"},
    "broker_account_id a map": {"broker_account_id": {"nested": True}},
}


def write_malformed_lease(
    db: firestore.Client, manager: FirestoreReservationManager, clock: FakeClock, **fields: Any
) -> str:
    """A real reservation, then damaged with `fields` and made older than any other lease."""
    request, _ = reserve(manager)
    ref = db.collection("tenants", request.tenant_id, "execution_reservations").document(
        request.client_intent_id
    )
    ref.update({**fields, "expires_at": clock() - timedelta(days=1)})
    return ref.path


def test_malformed_lapsed_leases_heading_every_page_are_reported_and_every_good_one_expired(
    db: firestore.Client,
    manager: FirestoreReservationManager,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="execution")
    malformed = {write_malformed_lease(db, manager, clock, **f) for f in MALFORMED_LEASES.values()}
    good = [reserve(manager)[0] for _ in range(5)]
    clock.advance(TTL.total_seconds() + 1)

    # Pages of 2: the five malformed documents, the oldest, fill the first pages entirely.
    report = sweeper(db, clock, page_size=2).sweep()

    assert {status_of(db, request) for request in good} == {("expired", "expired")}
    assert (report.expired, report.errors, report.complete) == (5, 5, True)
    assert set(report.error_ids) == malformed
    assert {event["path"] for event in logged(caplog.records, "exec.sweep.malformed")} == malformed


def test_a_malformed_lapsed_lease_is_left_as_it_is(
    db: firestore.Client, manager: FirestoreReservationManager, clock: FakeClock
) -> None:
    path = write_malformed_lease(db, manager, clock, attempt=None)

    report = sweeper(db, clock).sweep()

    assert report.error_ids == [path]
    assert (db.document(path).get().to_dict() or {})["status"] == "reserved"
