"""An order of unknown fate keeps counting against its account's limits until its fate is known.

The real engine, adapters and reconciler on the emulator, with the paper broker. A broker call
whose answer is lost (the broker acted, the answer timed out) or whose invocation died before
recording it may have placed an order: until a redelivery's lookup, the fenced-release settle or
the reconciler learns what the broker holds, that order still counts against the account's
position and daily orders, so no other intent can take the account past a limit at the broker.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
from google.cloud import firestore

from execution.brokers.paper import PaperBroker
from execution.clock import FakeClock
from execution.errors import BrokerTransientError, LimitWaitError
from execution.firestore.reservations import FirestoreReservationManager, inflight_ref
from execution.models import BrokerOrder, OrderRequest, Outcome, TradeIntent
from execution.reservations import Acquired, ReservationRequest
from execution.risk import RiskDecision
from tests.support.builders import (
    FAST_POLICY,
    CountingBroker,
    client_order_id_of,
    emulator_service,
    fast_settings,
    make_intent,
    reservation,
)
from tests.support.positions import positions_of

TTL = timedelta(seconds=fast_settings().reservation_ttl_seconds)
PAST_THE_LAST_CALL = TTL + timedelta(
    seconds=fast_settings().broker_call_seconds + fast_settings().clock_skew_seconds + 1
)
"""Past a lease's expiry plus the broker call margin: no call of that attempt can still land."""


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


class AnswerLostBroker(CountingBroker):
    """The paper broker, whose next `lose` placements act and then time out (answer lost)."""

    def __init__(self, inner: PaperBroker, *, lose: int = 0) -> None:
        super().__init__(inner)
        self.lose = lose

    def place_order(self, order: OrderRequest) -> BrokerOrder:
        placed = super().place_order(order)
        if self.lose:
            self.lose -= 1
            raise BrokerTransientError("read timeout: the broker acted, its answer was lost")
        return placed


@pytest.fixture
def broker(db: firestore.Client, clock: FakeClock) -> AnswerLostBroker:
    return AnswerLostBroker(PaperBroker(db, clock=clock, policy=FAST_POLICY))


def account(db: firestore.Client, intent: TradeIntent, **limits: Any) -> None:
    db.collection("tenants", intent.tenant_id, "accounts").document(intent.broker_account_id).set(
        limits
    )


def execute(db: firestore.Client, clock: FakeClock, broker: Any, intent: TradeIntent) -> Any:
    return emulator_service(db, clock, broker=broker).engine.execute_intent(intent)


def account_orders(db: firestore.Client, intent: TradeIntent) -> list[dict[str, Any]]:
    """The paper broker's orders of `intent`'s account (what the broker holds)."""
    return [
        data
        for snap in db.collection("tenants", intent.tenant_id, "paper_orders").stream()
        if (data := snap.to_dict() or {}).get("broker_account_id") == intent.broker_account_id
    ]


def net_position(orders: list[dict[str, Any]]) -> float:
    return sum(float(o["qty"]) if o["side"] == "buy" else -float(o["qty"]) for o in orders)


def account_state(db: firestore.Client, intent: TradeIntent) -> dict[str, Any]:
    return inflight_ref(db, intent.tenant_id, intent.broker_account_id).get().to_dict() or {}


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields `execution.telemetry.emit` attached to a log record."""
    attached: dict[str, Any] = getattr(record, "fields", {})
    return attached


def die_after_placing(db: firestore.Client, clock: FakeClock, intent: TradeIntent) -> str:
    """An invocation that took its lease, reached the broker and died before recording anything
    (its `finally` never ran); the broker's order id."""
    manager = FirestoreReservationManager(db, clock=clock, ttl=TTL, policy=FAST_POLICY)
    lease = manager.acquire(request_of(intent))
    assert isinstance(lease, Acquired)
    paper = PaperBroker(db, clock=clock, policy=FAST_POLICY)
    order = paper.place_order(OrderRequest.from_intent(intent, None, client_order_id_of(intent)))
    return order.broker_order_id


def die_before_the_broker(db: firestore.Client, clock: FakeClock, intent: TradeIntent) -> None:
    """An invocation that took its lease and died before its broker call."""
    manager = FirestoreReservationManager(db, clock=clock, ttl=TTL, policy=FAST_POLICY)
    assert isinstance(manager.acquire(request_of(intent)), Acquired)


def request_of(intent: TradeIntent) -> ReservationRequest:
    return ReservationRequest(
        tenant_id=intent.tenant_id,
        broker_account_id=intent.broker_account_id,
        client_intent_id=intent.client_intent_id,
        symbol=intent.symbol,
        side=intent.side,
        qty=intent.qty,
        amount_usd=intent.qty * (intent.limit_price or 0.0),
        payload_hash=intent.payload_hash(),
        client_order_id=client_order_id_of(intent),
    )


def test_a_timed_out_buy_keeps_counting_so_a_second_buy_cannot_pass_the_position_limit(
    db: firestore.Client, clock: FakeClock, broker: AnswerLostBroker
) -> None:
    first = make_intent(qty=10)
    second = make_intent(qty=10, broker_account_id=first.broker_account_id)
    account(db, first, max_position_qty=10)
    broker.lose = 1
    with pytest.raises(BrokerTransientError):
        execute(db, clock, broker, first)

    with pytest.raises(LimitWaitError):
        execute(db, clock, broker, second)

    assert net_position(account_orders(db, first)) == 10
    stored = reservation(db, first.tenant_id, first.client_intent_id)
    assert (stored["status"], stored["outcome"]) == ("released", "exception")
    assert stored["counted_lease_id"] == stored["lease_id"]


def test_the_redelivery_of_a_timed_out_order_records_it_and_the_limit_then_refuses_the_next(
    db: firestore.Client, clock: FakeClock, broker: AnswerLostBroker
) -> None:
    first = make_intent(qty=10)
    second = make_intent(qty=10, broker_account_id=first.broker_account_id)
    account(db, first, max_position_qty=10)
    broker.lose = 1
    with pytest.raises(BrokerTransientError):
        execute(db, clock, broker, first)

    redelivered = execute(db, clock, broker, first)
    retried = execute(db, clock, broker, second)

    assert (redelivered.outcome, redelivered.attempt) == (Outcome.PLACED, 2)
    assert (retried.outcome, retried.reason) == (Outcome.REJECTED, "max_position_exceeded: 20 > 10")
    state = account_state(db, first)
    assert (state["leases"], positions_of(state)) == ({}, {"AAPL": 10})
    assert broker.place_calls == 1
    assert reservation(db, first.tenant_id, first.client_intent_id)["counted_lease_id"] is None


def test_an_order_whose_invocation_died_keeps_counting_against_the_daily_orders_past_its_ttl(
    db: firestore.Client, clock: FakeClock, broker: AnswerLostBroker
) -> None:
    dead = make_intent()
    second = make_intent(broker_account_id=dead.broker_account_id)
    account(db, dead, max_daily_orders=1, max_inflight_usd=100.0)
    die_after_placing(db, clock, dead)
    clock.advance(TTL.total_seconds() + 1)  # the lease lapsed: its budget is free, its order not
    emulator_service(db, clock).sweeper.sweep()

    with pytest.raises(LimitWaitError) as waited:
        execute(db, clock, broker, second)

    assert "max_daily_orders" in str(waited.value)
    assert len(account_orders(db, dead)) == 1
    assert dead.client_intent_id in str(account_state(db, dead)["leases"])


def test_the_reconciler_records_a_dead_invocations_order_and_the_daily_limit_then_refuses(
    db: firestore.Client, clock: FakeClock, broker: AnswerLostBroker
) -> None:
    dead = make_intent()
    second = make_intent(broker_account_id=dead.broker_account_id)
    account(db, dead, max_daily_orders=1)
    order_id = die_after_placing(db, clock, dead)
    clock.advance(PAST_THE_LAST_CALL.total_seconds())

    report = emulator_service(db, clock).reconciler.reconcile()
    result = execute(db, clock, broker, second)

    stored = reservation(db, dead.tenant_id, dead.client_intent_id)
    assert (stored["outcome"], stored["broker_order_id"]) == ("placed", order_id)
    assert report.repaired >= 1
    assert (result.outcome, result.reason) == (
        Outcome.REJECTED,
        "max_daily_orders_reached: 1 of 1 used today (UTC)",
    )
    assert account_state(db, dead)["leases"] == {}


def test_the_reconciler_frees_the_count_of_a_dead_invocation_that_placed_nothing(
    db: firestore.Client,
    clock: FakeClock,
    broker: AnswerLostBroker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead = make_intent(qty=5)
    second = make_intent(qty=5, broker_account_id=dead.broker_account_id)
    account(db, dead, max_position_qty=5)
    die_before_the_broker(db, clock, dead)
    clock.advance(PAST_THE_LAST_CALL.total_seconds())
    service = emulator_service(db, clock)
    service.sweeper.sweep()
    with pytest.raises(LimitWaitError):
        execute(db, clock, broker, second)

    with caplog.at_level(logging.INFO):
        report = service.reconciler.reconcile()
    result = execute(db, clock, broker, second)

    assert result.outcome is Outcome.PLACED
    assert report.holds_released >= 1
    stored = reservation(db, dead.tenant_id, dead.client_intent_id)
    assert (stored["status"], stored["counted_lease_id"]) == ("expired", None)
    released = [r for r in caplog.records if r.getMessage() == "exec.limits.hold_released"]
    assert [fields(r)["client_intent_id"] for r in released] == [dead.client_intent_id]


def test_the_reconciler_leaves_a_hold_whose_last_broker_call_may_still_land(
    db: firestore.Client, clock: FakeClock, broker: AnswerLostBroker
) -> None:
    dead = make_intent(qty=5)
    account(db, dead, max_position_qty=5)
    die_before_the_broker(db, clock, dead)
    clock.advance(TTL.total_seconds() + 1)  # lapsed, but not past the broker call's margin

    report = emulator_service(db, clock).reconciler.reconcile()

    assert report.holds_released == 0
    assert dead.client_intent_id in str(account_state(db, dead)["leases"])


def test_an_exception_before_any_broker_call_frees_the_count_at_once(
    db: firestore.Client, clock: FakeClock, broker: AnswerLostBroker
) -> None:
    class FailingRisk:
        def __init__(self) -> None:
            self.calls = 0

        def validate(self, *args: Any) -> RiskDecision:
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("risk service bug")
            return RiskDecision(True, None)

    failing = make_intent(qty=5)
    second = make_intent(qty=5, broker_account_id=failing.broker_account_id)
    account(db, failing, max_position_qty=5)
    service = emulator_service(db, clock, broker=broker, risk=FailingRisk())
    with pytest.raises(RuntimeError):
        service.engine.execute_intent(failing)

    result = service.engine.execute_intent(second)

    assert result.outcome is Outcome.PLACED
    assert reservation(db, failing.tenant_id, failing.client_intent_id)["counted_lease_id"] is None


def test_a_timed_out_call_is_logged_as_a_count_held_for_an_unknown_fate(
    db: firestore.Client,
    clock: FakeClock,
    broker: AnswerLostBroker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    intent = make_intent(qty=3)
    account(db, intent, max_position_qty=10)
    broker.lose = 1

    with caplog.at_level(logging.WARNING), pytest.raises(BrokerTransientError):
        execute(db, clock, broker, intent)

    [held] = [r for r in caplog.records if r.getMessage() == "exec.limits.fate_unknown"]
    assert (fields(held)["client_intent_id"], fields(held)["qty"]) == (intent.client_intent_id, 3.0)


def test_a_timed_out_call_gives_the_budget_back_but_keeps_counting_its_quantity(
    db: firestore.Client, clock: FakeClock, broker: AnswerLostBroker
) -> None:
    first = make_intent(qty=5)
    second = make_intent(qty=5, broker_account_id=first.broker_account_id)
    third = make_intent(qty=1, broker_account_id=first.broker_account_id)
    account(db, first, max_inflight_usd=600.0, max_position_qty=10)
    broker.lose = 1
    with pytest.raises(BrokerTransientError):
        execute(db, clock, broker, first)

    placed = execute(db, clock, broker, second)  # 500 USD fits: the first's 500 were given back
    with pytest.raises(LimitWaitError):
        execute(db, clock, broker, third)  # 5 placed + 5 of unknown fate + 1 > 10

    assert placed.outcome is Outcome.PLACED
    assert net_position(account_orders(db, first)) == 10
