"""Faults the simulation injects through the store hook, seen by the real adapters."""

from __future__ import annotations

from datetime import timedelta

import pytest
from google.api_core import exceptions as gexc

from execution.clock import FakeClock
from execution.errors import BrokerTransientError, OutcomeUnrecordedError, StoreUnavailableError
from execution.firestore.reservations import FirestoreReservationManager
from execution.firestore.sweeper_store import FirestoreExpiredLeases
from execution.models import Outcome
from execution.reservations import ReservationRequest
from execution.sweeper import Sweeper
from tests.simulation.simstore import Fault, SimClient, StoreCall
from tests.simulation.simstore.faults import deadline_exceeded, unavailable
from tests.support.builders import FAST_POLICY, emulator_service, make_intent

TTL = timedelta(seconds=30)
RESERVATION = "tenants/t/execution_reservations/i-1"


def request() -> ReservationRequest:
    return ReservationRequest(
        tenant_id="t",
        broker_account_id="a",
        client_intent_id="i-1",
        symbol="AAPL",
        amount_usd=10.0,
        payload_hash="h",
    )


def manager(db: SimClient, clock: FakeClock) -> FirestoreReservationManager:
    return FirestoreReservationManager(db, clock=clock, ttl=TTL, policy=FAST_POLICY)


class FailCommits:
    """Fails the first `times` commits with `fault`; records every call it sees."""

    def __init__(self, fault: Fault, times: int = 1) -> None:
        self.fault = fault
        self.left = times
        self.seen: list[StoreCall] = []

    def __call__(self, call: StoreCall) -> Fault | None:
        self.seen.append(call)
        if call.kind == "commit" and self.left > 0:
            self.left -= 1
            return self.fault
        return None


def test_a_commit_failed_before_it_lands_changes_nothing(sim_db: SimClient) -> None:
    sim_db.faults = FailCommits(unavailable())

    with pytest.raises(StoreUnavailableError):
        manager(sim_db, FakeClock()).acquire(request())

    assert sim_db.peek(RESERVATION) is None


def test_a_commit_failed_after_it_landed_leaves_a_lease_the_sweeper_expires(
    sim_db: SimClient, sim_clock: FakeClock
) -> None:
    sim_db.faults = FailCommits(deadline_exceeded(after_commit=True))

    with pytest.raises(StoreUnavailableError):
        manager(sim_db, sim_clock).acquire(request())

    landed = sim_db.peek(RESERVATION)
    assert landed is not None and landed["status"] == "reserved"
    sim_clock.advance(TTL.total_seconds() + 1)
    report = Sweeper(FirestoreExpiredLeases(sim_db, policy=FAST_POLICY), clock=sim_clock).sweep()
    assert report.expired == 1
    assert (sim_db.peek(RESERVATION) or {})["status"] == "expired"


def test_a_release_whose_answer_was_lost_is_redelivered_though_it_landed(
    sim_db: SimClient, sim_clock: FakeClock
) -> None:
    intent = make_intent(tenant_id="t")
    reservation = f"tenants/t/execution_reservations/{intent.client_intent_id}"
    commits_of_the_reservation: list[StoreCall] = []

    def lose_the_release_answer(call: StoreCall) -> Fault | None:
        if call.kind == "commit" and reservation in call.paths:
            commits_of_the_reservation.append(call)
            if len(commits_of_the_reservation) == 2:  # the acquire's, then the release's
                return unavailable(after_commit=True)
        return None

    sim_db.faults = lose_the_release_answer
    service = emulator_service(sim_db, sim_clock)

    # The engine answers the raising release UNRECORDED: the delivery is retried.
    with pytest.raises(OutcomeUnrecordedError):
        service.engine.execute_intent(intent)

    # The answer was lost; the document says what happened.
    [order] = sim_db.dump("paper_orders").values()
    doc = sim_db.peek(reservation) or {}
    assert (doc["status"], doc["outcome"], doc["broker_order_id"]) == (
        "released",
        "placed",
        order["broker_order_id"],
    )


def test_the_hook_sees_every_call_with_its_kind_and_documents(sim_db: SimClient) -> None:
    hook = FailCommits(unavailable(), times=0)
    sim_db.faults = hook
    col = sim_db.collection("c")

    col.document("a").create({"n": 1})
    col.document("a").get()
    list(sim_db.get_all([col.document("a"), col.document("b")]))
    list(col.stream())
    col.count().get()

    assert [(c.kind, c.paths) for c in hook.seen] == [
        ("commit", ("c/a",)),
        ("get", ("c/a",)),
        ("get_all", ("c/a", "c/b")),
        ("query", ("c",)),
        ("aggregate", ("c",)),
    ]
    assert sim_db.calls == {"commit": 1, "get": 1, "get_all": 1, "query": 1, "aggregate": 1}


def test_get_all_and_stream_reach_the_store_only_when_iterated(sim_db: SimClient) -> None:
    hook = FailCommits(unavailable(), times=0)
    sim_db.faults = hook
    reads = sim_db.get_all([sim_db.document("c/a")])
    rows = sim_db.collection("c").stream()
    assert hook.seen == []
    list(reads), list(rows)
    assert [c.kind for c in hook.seen] == ["get_all", "query"]


def test_a_read_fault_raises_the_error_it_carries(sim_db: SimClient) -> None:
    sim_db.faults = lambda call: unavailable() if call.kind == "get" else None
    with pytest.raises(gexc.ServiceUnavailable):
        sim_db.document("c/a").get()


def test_commit_times_come_from_the_clock_and_strictly_increase(
    sim_db: SimClient, sim_clock: FakeClock
) -> None:
    doc = sim_db.document("c/a")
    first = doc.set({"n": 1}).update_time
    second = doc.set({"n": 2}).update_time
    sim_clock.advance(5)
    third = doc.set({"n": 3}).update_time

    assert first == sim_clock() - timedelta(seconds=5)
    assert second == first + timedelta(microseconds=1)
    assert third == sim_clock()


def test_the_same_seed_gives_the_same_generated_ids(sim_clock: FakeClock) -> None:
    def generated(seed: int) -> list[str]:
        col = SimClient(clock=sim_clock, seed=seed).collection("c")
        return [col.document().id for _ in range(3)]

    assert generated(7) == generated(7)
    assert generated(7) != generated(8)
    assert len(set(generated(7))) == 3


def test_a_paper_order_accepted_unanswered_is_found_again_by_the_redelivery(
    sim_db: SimClient, sim_clock: FakeClock
) -> None:
    def lose_the_paper_answer(call: StoreCall) -> Fault | None:
        if call.kind == "commit" and any("/paper_orders/" in p for p in call.paths):
            sim_db.faults = None  # once
            return deadline_exceeded(after_commit=True)
        return None

    sim_db.faults = lose_the_paper_answer
    service = emulator_service(sim_db, sim_clock)
    intent = make_intent(tenant_id="t")

    with pytest.raises(BrokerTransientError):  # the delivery is retried
        service.engine.execute_intent(intent)
    second = service.engine.execute_intent(intent)

    orders = sim_db.dump("paper_orders")
    assert len(orders) == 1
    [order] = orders.values()
    assert (second.outcome, second.broker_order_id) == (Outcome.PLACED, order["broker_order_id"])
    assert list(sim_db.dump("ledger_trades")) == [
        f"tenants/t/ledger_trades/{order['broker_order_id']}"
    ]
