"""The fault hook is a scheduling point: another invocation can run inside it, on one thread.

The hook runs before its call has read or written anything, so running a second invocation to
completion inside it is the interleaving "B ran between A's read and A's commit", exactly and
repeatably: what a scheduler of the simulation tier will do at every store call.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from execution.clock import FakeClock
from execution.errors import BudgetWaitError, ReservationInFlightError
from execution.firestore.reservations import FirestoreReservationManager
from execution.reservations import Acquired, ReservationRequest
from tests.simulation.simstore import Fault, SimClient, StoreCall
from tests.support.builders import FAST_POLICY

TTL = timedelta(seconds=30)


def request(intent_id: str, amount_usd: float = 60.0) -> ReservationRequest:
    return ReservationRequest(
        tenant_id="t",
        broker_account_id="a",
        client_intent_id=intent_id,
        symbol="AAPL",
        amount_usd=amount_usd,
        payload_hash="h",
    )


def run_inside_first_commit(db: SimClient, other: Callable[[], object]) -> list[object]:
    """Install a hook that runs `other` once, just before the first commit reaches the store."""
    ran: list[object] = []

    def hook(call: StoreCall) -> Fault | None:
        if call.kind == "commit" and not ran:
            db.faults = None  # `other` runs without interleavings of its own
            ran.append(other())
            db.faults = hook
        return None

    db.faults = hook
    return ran


def manager(db: SimClient, clock: FakeClock) -> FirestoreReservationManager:
    return FirestoreReservationManager(
        db, clock=clock, ttl=TTL, policy=FAST_POLICY, sleep=lambda _seconds: None
    )


def test_a_duplicate_delivery_between_read_and_commit_leaves_one_holder(
    sim_db: SimClient, sim_clock: FakeClock
) -> None:
    reservations = manager(sim_db, sim_clock)
    ran = run_inside_first_commit(sim_db, lambda: reservations.acquire(request("i-1")))

    with pytest.raises(ReservationInFlightError):
        reservations.acquire(request("i-1"))

    [inner] = ran
    assert isinstance(inner, Acquired)
    doc = sim_db.peek("tenants/t/execution_reservations/i-1") or {}
    assert (doc["status"], doc["lease_id"], doc["attempt"]) == (
        "reserved",
        inner.handle.lease_id,
        1,
    )


def test_two_intents_racing_for_one_budget_never_both_fit(
    sim_db: SimClient, sim_clock: FakeClock
) -> None:
    sim_db.document("tenants/t/accounts/a").set({"max_inflight_usd": 100})
    reservations = manager(sim_db, sim_clock)
    ran = run_inside_first_commit(sim_db, lambda: reservations.acquire(request("i-2")))

    with pytest.raises(BudgetWaitError):
        reservations.acquire(request("i-1"))

    assert isinstance(ran[0], Acquired)
    leases = (sim_db.peek("tenants/t/execution_inflight/a") or {})["leases"]
    assert [entry["client_intent_id"] for entry in leases.values()] == ["i-2"]
    assert sim_db.peek("tenants/t/execution_reservations/i-1") is None
