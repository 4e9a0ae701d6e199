"""Adversarial review of the per-account limits and their state document, on the emulator.

The real engine, adapters and reconciler with the paper broker. Each test is one way a
reviewer got (or tried to get) an account past a limit or a record stuck: clocks a little apart
at the UTC day's end, an account-state document an operator corrupted or deleted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from google.cloud import firestore

from execution.brokers.paper import PaperBroker
from execution.clock import FakeClock
from execution.errors import (
    BrokerRejectedError,
    LimitWaitError,
    PayloadConflictError,
    PermanentError,
)
from execution.firestore.reservations import inflight_ref
from execution.models import BrokerOrder, ExecutionResult, OrderRequest, Outcome, TradeIntent
from tests.emulator.test_limits_firestore import account, execute
from tests.emulator.test_unknown_fate_firestore import PAST_THE_LAST_CALL, die_before_the_broker
from tests.support.builders import (
    FAST_POLICY,
    CountingBroker,
    client_order_id_of,
    emulator_service,
    make_intent,
    reservation,
    unique,
)
from tests.support.positions import positions_of

BEFORE_MIDNIGHT = datetime(2026, 1, 5, 23, 59, 53, tzinfo=UTC)
AFTER_MIDNIGHT = datetime(2026, 1, 6, 0, 0, 7, tzinfo=UTC)
"""Two instances' clocks on either side of the end of a UTC day, each further from midnight than
CLOCK_SKEW_SECONDS (5 s): an order either places counts on its own day alone (nearer midnight it
counts on both, `tests/emulator/test_midnight_skew.py`), and the peer rewrites the day counts."""


def state_ref(intent: TradeIntent, db: firestore.Client) -> firestore.DocumentReference:
    return inflight_ref(db, intent.tenant_id, intent.broker_account_id)


def same_account(intent: TradeIntent, **overrides: Any) -> TradeIntent:
    return make_intent(
        tenant_id=intent.tenant_id, broker_account_id=intent.broker_account_id, **overrides
    )


DAILY_LIMIT_REACHED = (Outcome.REJECTED, "max_daily_orders_reached: 1 of 1 used today (UTC)")


@dataclass(frozen=True)
class FirstOrder:
    """One order placed on an account with `max_daily_orders=1`, by an instance at `clock`."""

    clock: FakeClock
    broker: CountingBroker
    intent: TradeIntent
    result: ExecutionResult


def first_order_at(db: firestore.Client, placing: datetime) -> FirstOrder:
    clock = FakeClock(placing)
    broker = CountingBroker(PaperBroker(db, clock=clock, policy=FAST_POLICY))
    first = make_intent()
    account(db, first, max_daily_orders=1)
    return FirstOrder(clock, broker, first, execute(db, clock, broker, first))


@pytest.mark.parametrize(
    ("placing", "peer"),
    [(BEFORE_MIDNIGHT, AFTER_MIDNIGHT), (AFTER_MIDNIGHT, BEFORE_MIDNIGHT)],
    ids=["peer-clock-ahead", "peer-clock-behind"],
)
def test_a_peer_whose_clock_is_in_another_utc_day_cannot_erase_the_daily_order_count(
    db: firestore.Client, placing: datetime, peer: datetime
) -> None:
    first = first_order_at(db, placing)
    # Another instance, its clock on the other side of midnight, admits an intent of the account
    # (a dry run: it places nothing) and rewrites the day counts as its own day sees them.
    dry_run = same_account(first.intent, dry_run=True)
    peered = execute(db, FakeClock(peer), first.broker, dry_run)
    late = execute(db, first.clock, first.broker, same_account(first.intent))

    assert (first.result.outcome, peered.outcome) == (Outcome.PLACED, Outcome.DRY_RUN)
    assert (late.outcome, late.reason) == DAILY_LIMIT_REACHED
    assert first.broker.place_calls == 1


def test_a_corrupted_account_state_is_a_named_wait_that_writes_nothing(
    db: firestore.Client, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    broker = CountingBroker(PaperBroker(db, clock=clock, policy=FAST_POLICY))
    intent = make_intent()
    account(db, intent, max_position_qty=10)
    state_ref(intent, db).set({"positions": {"AAPL": "ten"}})  # an operator's hand edit

    # Before: a bare MalformedDocumentError (a ValueError) on every delivery, an unnamed crash.
    with pytest.raises(LimitWaitError) as waited:
        execute(db, clock, broker, intent)

    assert str(waited.value).startswith("account_state_unreadable")
    assert "exec.limits.state_unreadable" in [r.getMessage() for r in caplog.records]
    reservations = db.collection("tenants", intent.tenant_id, "execution_reservations")
    assert not reservations.document(intent.client_intent_id).get().exists
    assert broker.place_calls == 0


def test_one_corrupted_account_state_does_not_stop_the_reconciler_settling_other_holds(
    db: firestore.Client,
) -> None:
    clock = FakeClock()
    # Ordered first in the collection-group walk, so that it is met before the good account.
    corrupted = make_intent(tenant_id=f"a0-{unique('tenant')}")
    account(db, corrupted, max_daily_orders=5)
    state_ref(corrupted, db).set({"leases": {"lease-x": {"amount_usd": "lots"}}})
    dead = make_intent(tenant_id=f"z9-{unique('tenant')}")
    account(db, dead, max_daily_orders=5)
    die_before_the_broker(db, clock, dead)
    (lease_id,) = (state_ref(dead, db).get().to_dict() or {})["leases"]
    clock.advance(PAST_THE_LAST_CALL.total_seconds())

    report = emulator_service(db, clock).reconciler.reconcile()

    assert lease_id not in (state_ref(dead, db).get().to_dict() or {}).get("leases", {})
    assert report.holds_released >= 1
    assert report.complete is False  # the corrupted document was not read: nothing concluded
    assert any(state_ref(corrupted, db).path in error for error in report.errors)


class RejectingAfter(CountingBroker):
    """A paper broker that runs `meanwhile` inside the call, then refuses the order for good."""

    def __init__(self, inner: PaperBroker, meanwhile: Any) -> None:
        super().__init__(inner)
        self._meanwhile = meanwhile

    def place_order(self, order: OrderRequest) -> BrokerOrder:
        self.place_calls += 1
        self._meanwhile()
        raise BrokerRejectedError("insufficient buying power")


def test_a_deleted_account_state_does_not_leave_a_refused_intent_reserved(
    db: firestore.Client,
) -> None:
    clock = FakeClock()
    intent = make_intent()
    account(db, intent, max_daily_orders=5)
    paper = PaperBroker(db, clock=clock, policy=FAST_POLICY)
    broker = RejectingAfter(paper, meanwhile=lambda: state_ref(intent, db).delete())

    result = execute(db, clock, broker, intent)

    assert result.outcome is Outcome.REJECTED
    stored = reservation(db, intent.tenant_id, intent.client_intent_id)
    assert (stored["status"], stored["outcome"]) == ("released", "rejected")


def test_an_order_whose_record_is_corrupted_does_not_stop_the_reconciler(
    db: firestore.Client,
) -> None:
    clock = FakeClock()
    paper = PaperBroker(db, clock=clock, policy=FAST_POLICY)
    corrupted, halted = make_intent(tenant_id=unique("tenant")), make_intent()
    db.collection("tenants", corrupted.tenant_id, "execution_reservations").document(
        corrupted.client_intent_id
    ).set({"status": "reserved", "attempt": "one"})  # an operator's hand edit
    paper.place_order(OrderRequest.from_intent(corrupted, None, client_order_id_of(corrupted)))
    halt = db.collection("tenants", halted.tenant_id, "ops").document("execution_kill_switch")
    halt.set({"enabled": True})
    assert emulator_service(db, clock).engine.execute_intent(halted).outcome is Outcome.HALTED
    halt.set({"enabled": False})
    clock.advance(1)  # listed after the corrupted record's order
    order = paper.place_order(OrderRequest.from_intent(halted, None, client_order_id_of(halted)))

    # Before: the record's MalformedDocumentError (a ValueError) escaped the whole run.
    report = emulator_service(db, clock).reconciler.reconcile()

    repaired = reservation(db, halted.tenant_id, halted.client_intent_id)
    assert (repaired["outcome"], repaired["broker_order_id"]) == ("placed", order.broker_order_id)
    assert report.complete is False
    assert any(corrupted.client_intent_id in error for error in report.errors)


def test_the_same_intent_id_for_a_second_account_of_the_tenant_never_touches_either_account(
    db: firestore.Client,
) -> None:
    clock = FakeClock()
    broker = CountingBroker(PaperBroker(db, clock=clock, policy=FAST_POLICY))
    first = make_intent(qty=5)
    second = make_intent(qty=5, client_intent_id=first.client_intent_id)  # another account
    for intent in (first, second):
        account(db, intent, max_position_qty=5, max_daily_orders=1)

    placed = execute(db, clock, broker, first)
    with pytest.raises(PayloadConflictError):
        execute(db, clock, broker, second)

    assert placed.outcome is Outcome.PLACED
    assert broker.place_calls == 1
    assert positions_of(state_ref(first, db).get().to_dict()) == {"AAPL": 5}
    assert not state_ref(second, db).get().exists  # no hold, no count on the second account
    stored = reservation(db, first.tenant_id, first.client_intent_id)
    assert stored["broker_account_id"] == first.broker_account_id


def test_a_corrupted_reservation_is_dead_lettered_with_its_reason_and_left_for_the_operator(
    db: firestore.Client,
) -> None:
    clock = FakeClock()
    broker = CountingBroker(PaperBroker(db, clock=clock, policy=FAST_POLICY))
    intent = make_intent()
    corrupted = {"status": "reserved", "attempt": "one"}
    db.collection("tenants", intent.tenant_id, "execution_reservations").document(
        intent.client_intent_id
    ).set(corrupted)

    with pytest.raises(PermanentError, match="attempt"):  # main dead-letters and acks it
        execute(db, clock, broker, intent)

    assert broker.place_calls == 0
    assert reservation(db, intent.tenant_id, intent.client_intent_id) == corrupted
