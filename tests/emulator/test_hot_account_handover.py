"""The state one writer of a limited account hands to the next in its turn (`account_turns`).

Against the Firestore emulator through the real reservations adapter. Two managers on two
clients stand for two instances: each has its own turns, so only the preconditions decide
between them. A writer that decides on a handed-over state commits under a precondition on its
`update_time`: where the state is current it needs no read; where another instance wrote since,
the commit fails, and the writer reads and decides again, never admitting on what it was handed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from google.cloud import firestore

from execution.account_state import utc_day
from execution.clock import FakeClock
from execution.errors import BudgetWaitError
from execution.firestore.reservations import (
    BudgetRead,
    FirestoreReservationManager,
    budget_refs,
    inflight_ref,
)
from execution.models import Outcome
from execution.reservations import Acquired, ReservationRequest
from tests.support.builders import FAST_POLICY, reservation, unique

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
    assert state["positions"] == {"AAPL": 1.0}
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
    assert state["positions"] == {"AAPL": 1.0}
    assert state["placed_orders"] == {utc_day(instances.clock()): 1}
    assert reservation(instances.db, "tenant-h", first.client_intent_id)["outcome"] == "placed"
