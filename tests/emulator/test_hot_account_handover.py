"""The state one writer of a limited account hands to the next in its turn (`account_turns`).

Against the Firestore emulator through the real reservations adapter. Two managers on two
clients stand for two instances: each has its own turns, so only the preconditions decide
between them. A writer that decides on a handed-over state commits under a precondition on its
`update_time`: where the state is current it needs no read; where another instance wrote since,
the commit fails, and the writer reads and decides again, never admitting on what it was handed.
The acquires waiting in line behind one writer are decided in order on one state and created in
one commit; a batch fails as a whole, and then each acquires alone.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from google.cloud import firestore

from execution.account_state import utc_day
from execution.clock import FakeClock
from execution.errors import BudgetWaitError
from execution.firestore.account_turns import AccountTurns
from execution.firestore.reservations import (
    BudgetRead,
    FirestoreReservationManager,
    budget_refs,
    inflight_ref,
)
from execution.models import Outcome
from execution.reservations import Acquired, Acquisition, AlreadyExecuted, ReservationRequest
from tests.support.builders import FAST_POLICY, reservation, unique
from tests.support.positions import positions_of
from tests.support.waiting import wait_until

TTL = timedelta(seconds=30)
LIMITS = {"max_inflight_usd": 100.0, "max_daily_orders": 50, "max_position_qty": 50.0}


@dataclass
class Instances:
    """Two instances of the service on one account: their own client and turns each."""

    db: firestore.Client
    other_db: firestore.Client
    clock: FakeClock
    tenant_id: str
    account_id: str

    def manager(self, db: firestore.Client) -> FirestoreReservationManager:
        return FirestoreReservationManager(db, clock=self.clock, ttl=TTL, policy=FAST_POLICY)

    def buy(self, amount_usd: float = 60.0) -> ReservationRequest:
        return ReservationRequest(
            self.tenant_id,
            self.account_id,
            unique("intent"),
            "AAPL",
            amount_usd,
            "hash-1",
            side="buy",
            qty=1.0,
        )

    def opening_read(self) -> BudgetRead:
        """What an invocation reads when it opens: the account and its state."""
        account, state = budget_refs(self.db, self.tenant_id, self.account_id)
        snaps = {snap.reference.path: snap for snap in self.db.get_all([account, state])}
        return BudgetRead(snaps[account.path], snaps[state.path])

    def state(self) -> dict[str, Any]:
        return inflight_ref(self.db, self.tenant_id, self.account_id).get().to_dict() or {}


@pytest.fixture
def instances(db: firestore.Client) -> Any:
    other_db = firestore.Client(project=db.project)
    rig = Instances(db, other_db, FakeClock(), "tenant-h", unique("acct"))
    rig.db.collection("tenants", rig.tenant_id, "accounts").document(rig.account_id).set(LIMITS)
    yield rig
    other_db.close()


def acquired(manager: FirestoreReservationManager, request: ReservationRequest, **kw: Any) -> Any:
    answer = manager.acquire(request, **kw)
    assert isinstance(answer, Acquired) and answer.refused is None, answer
    return answer.handle


def contended(caplog: pytest.LogCaptureFixture, request: ReservationRequest) -> int:
    """How many of `request`'s acquire commits lost a precondition race."""
    return sum(
        1
        for record in caplog.records
        if record.getMessage() == "exec.reservation.contended"
        and getattr(record, "fields", {}).get("client_intent_id") == request.client_intent_id
    )


def test_an_acquire_behind_a_writer_of_its_instance_decides_on_the_state_handed_over(
    instances: Instances, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="execution")
    manager = instances.manager(instances.db)
    first, second = instances.buy(), instances.buy()
    stale = instances.opening_read()  # the second intent opened before the first one's writes
    acquired(manager, first).release(Outcome.PLACED, broker_order_id="o-1")

    acquired(manager, second, budget_read=stale)

    # Its opening read was out of date; the state the release handed over was not: no race lost.
    assert contended(caplog, second) == 0
    state = instances.state()
    lease_id = reservation(instances.db, "tenant-h", second.client_intent_id)["lease_id"]
    assert list(state["leases"]) == [lease_id]
    assert positions_of(state) == {"AAPL": 1.0}
    assert state["placed_orders"] == {utc_day(instances.clock()): 1}


def test_a_handed_over_state_another_instance_changed_fails_its_precondition_and_never_admits(
    instances: Instances, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="execution")
    mine, theirs = instances.manager(instances.db), instances.manager(instances.other_db)
    first, other, second = instances.buy(), instances.buy(), instances.buy()
    stale = instances.opening_read()
    acquired(mine, first).release(Outcome.REJECTED)  # hands over the account empty
    acquired(theirs, other)  # the other instance takes 60 of the 100 USD meanwhile

    # Handed "empty", the acquire would admit 60 more; its precondition fails, it reads, it waits.
    with pytest.raises(BudgetWaitError):
        mine.acquire(second, budget_read=stale)

    assert contended(caplog, second) == 1
    state = instances.state()
    assert [lease["client_intent_id"] for lease in state["leases"].values()] == [
        other.client_intent_id
    ]
    assert (
        not instances.db.document(
            f"tenants/tenant-h/execution_reservations/{second.client_intent_id}"
        )
        .get()
        .exists
    )


def test_a_release_whose_handed_state_another_instance_changed_still_lands_whole(
    instances: Instances,
) -> None:
    mine, theirs = instances.manager(instances.db), instances.manager(instances.other_db)
    first, other, after = instances.buy(30.0), instances.buy(30.0), instances.buy(30.0)
    handle = acquired(mine, first)  # hands over the account holding `first`
    acquired(theirs, other)  # the other instance writes the account meanwhile

    handle.release(Outcome.PLACED, broker_order_id="o-1")
    acquired(mine, after)  # behind the release: nothing current was handed over, it reads

    state = instances.state()
    assert sorted(lease["client_intent_id"] for lease in state["leases"].values()) == sorted(
        [other.client_intent_id, after.client_intent_id]
    )
    assert positions_of(state) == {"AAPL": 1.0}
    assert state["placed_orders"] == {utc_day(instances.clock()): 1}
    assert reservation(instances.db, "tenant-h", first.client_intent_id)["outcome"] == "placed"


def in_line(
    instances: Instances, requests: list[ReservationRequest]
) -> dict[str, Acquisition | BaseException]:
    """Acquire `requests` from threads that line up behind a turn the test holds, each with its
    opening read, as invocations of one instance do; then let them go. Answers by intent."""
    turns = AccountTurns()
    manager = FirestoreReservationManager(
        instances.db, clock=instances.clock, ttl=TTL, policy=FAST_POLICY, turns=turns
    )
    answers: dict[str, Acquisition | BaseException] = {}

    def acquire(request: ReservationRequest, read: BudgetRead) -> None:
        try:
            answers[request.client_intent_id] = manager.acquire(request, budget_read=read)
        except Exception as exc:  # reported with the answers
            answers[request.client_intent_id] = exc

    reads = [instances.opening_read() for _ in requests]
    with turns.turn(instances.tenant_id, instances.account_id):
        threads = [
            threading.Thread(target=acquire, args=(request, read))
            for request, read in zip(requests, reads, strict=True)
        ]
        for thread in threads:
            thread.start()
        wait_until(
            lambda: turns.waiting(instances.tenant_id, instances.account_id) == len(requests),
            timeout=60,
            what="every acquire in line",
            interval=0.001,
        )
    for thread in threads:
        thread.join(timeout=60)
    return answers


def update_times(instances: Instances, requests: list[ReservationRequest]) -> set[Any]:
    refs = [
        instances.db.document(f"tenants/tenant-h/execution_reservations/{r.client_intent_id}")
        for r in requests
    ]
    refs.append(inflight_ref(instances.db, instances.tenant_id, instances.account_id))
    return {snap.update_time for snap in instances.db.get_all(refs)}


def test_acquires_waiting_in_line_are_created_with_the_state_in_one_commit(
    instances: Instances,
) -> None:
    requests = [instances.buy(20.0) for _ in range(4)]

    answers = in_line(instances, requests)

    assert all(isinstance(answer, Acquired) for answer in answers.values()), answers
    # One commit wrote the four reservations and the state: they share its update time.
    assert len(update_times(instances, requests)) == 1
    leases = instances.state()["leases"].values()
    assert sorted(lease["client_intent_id"] for lease in leases) == sorted(
        r.client_intent_id for r in requests
    )


def test_acquires_in_line_past_a_limit_are_left_to_wait_and_the_rest_ride_together(
    instances: Instances,
) -> None:
    requests = [instances.buy(40.0) for _ in range(4)]  # 100 USD: room for two of them

    answers = in_line(instances, requests)

    acquired_ids = sorted(i for i, a in answers.items() if isinstance(a, Acquired))
    waiting = [a for a in answers.values() if isinstance(a, BudgetWaitError)]
    assert (len(acquired_ids), len(waiting)) == (2, 2), answers
    leases = instances.state()["leases"].values()
    assert sorted(lease["client_intent_id"] for lease in leases) == acquired_ids


def test_a_batch_in_line_with_an_intent_already_executed_falls_back_to_each_alone(
    instances: Instances,
) -> None:
    done, *fresh = [instances.buy(20.0) for _ in range(3)]
    manager = instances.manager(instances.db)
    acquired(manager, done).release(Outcome.PLACED, broker_order_id="o-1")

    answers = in_line(instances, [done, *fresh])

    # Its `create` fails the batch as a whole; alone, it is the duplicate, the others acquired.
    assert isinstance(answers[done.client_intent_id], AlreadyExecuted), answers
    assert all(isinstance(answers[r.client_intent_id], Acquired) for r in fresh), answers
    leases = instances.state()["leases"].values()
    assert sorted(lease["client_intent_id"] for lease in leases) == sorted(
        r.client_intent_id for r in fresh
    )


def test_a_release_whose_handed_state_document_is_gone_still_lands(instances: Instances) -> None:
    manager = instances.manager(instances.db)
    request = instances.buy()
    handle = acquired(manager, request)  # hands over the state holding its lease
    inflight_ref(instances.db, instances.tenant_id, instances.account_id).delete()

    handle.release(Outcome.PLACED, broker_order_id="o-1")

    assert positions_of(instances.state()) == {"AAPL": 1.0}
    assert reservation(instances.db, "tenant-h", request.client_intent_id)["outcome"] == "placed"
