"""A sweep and a reconcile on one lapsed lease (simulation seed 512 of the skew change).

The reconciler ends the hold of a dead invocation (no order at the broker) by clearing the
record's `counted_lease_id`; the lease itself stays `reserved` and lapsed, for the sweeper. Where
that write lands between the sweep's query and its expiry, the expiry's precondition (the update
time the query saw) fails although the lease is as lapsed and as much the dead invocation's as
before: the sweep must still expire it, not skip it until the next sweep.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from google.cloud import firestore

from execution.clock import FakeClock
from execution.firestore.reservations import FirestoreReservationManager
from execution.firestore.sweeper_store import FirestoreExpiredLeases
from execution.reconciler import Reconciler
from execution.reservations import Acquired, ReservationRequest
from execution.sweeper import ExpiredLease, FoundLease, Sweeper
from tests.support.builders import (
    FAST_POLICY,
    client_order_id_of,
    emulator_service,
    fast_settings,
    make_intent,
    reservation,
)

SETTINGS = fast_settings()
TTL = timedelta(seconds=SETTINGS.reservation_ttl_seconds)
PAST_THE_LAST_CALL = TTL + timedelta(
    seconds=SETTINGS.broker_call_seconds + SETTINGS.clock_skew_seconds + 1
)


@pytest.fixture(autouse=True)
def empty_project(reset_firestore: Any) -> None:
    """Sweeps and reconciles are project-wide: start each test from an empty database."""


class ReconcileBeforeExpiry:
    """The real sweeper store, with one reconcile run between the query and the first expiry."""

    def __init__(self, store: FirestoreExpiredLeases, reconciler: Reconciler) -> None:
        self._store = store
        self._reconciler: Reconciler | None = reconciler

    def find_expired(
        self, now: datetime, *, limit: int, after: FoundLease | None
    ) -> list[FoundLease]:
        return self._store.find_expired(now, limit=limit, after=after)

    def expire(self, lease: ExpiredLease, now: datetime) -> bool:
        if self._reconciler is not None:
            self._reconciler.reconcile()
            self._reconciler = None
        return self._store.expire(lease, now)


def test_a_hold_ended_between_the_sweeps_query_and_its_expiry_does_not_keep_the_lease_reserved(
    db: firestore.Client,
) -> None:
    clock = FakeClock()
    dead = make_intent(qty=5)
    db.collection("tenants", dead.tenant_id, "accounts").document(dead.broker_account_id).set(
        {"max_position_qty": 5}
    )
    manager = FirestoreReservationManager(db, clock=clock, ttl=TTL, policy=FAST_POLICY)
    request = ReservationRequest(
        tenant_id=dead.tenant_id,
        broker_account_id=dead.broker_account_id,
        client_intent_id=dead.client_intent_id,
        symbol=dead.symbol,
        side=dead.side,
        qty=dead.qty,
        amount_usd=dead.qty * (dead.limit_price or 0.0),
        payload_hash=dead.payload_hash(),
        client_order_id=client_order_id_of(dead),
    )
    assert isinstance(manager.acquire(request), Acquired)  # then the invocation dies
    clock.advance(PAST_THE_LAST_CALL.total_seconds())
    service = emulator_service(db, clock, settings=SETTINGS)
    store = ReconcileBeforeExpiry(
        FirestoreExpiredLeases(db, policy=FAST_POLICY), service.reconciler
    )

    report = Sweeper(store, clock=clock).sweep()

    stored = reservation(db, dead.tenant_id, dead.client_intent_id)
    assert (stored["status"], stored["outcome"], stored["counted_lease_id"]) == (
        "expired",
        "expired",
        None,
    )
    assert (report.expired, report.skipped) == (1, 0)
