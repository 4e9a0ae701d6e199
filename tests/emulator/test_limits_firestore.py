"""Per-account limits hold at every instant: the real engine and adapters on the emulator.

Each scenario of issue 12 that the limits own: an intent that passes a limit while another is
inside its broker call, a declared notional below the order's worth, a malformed account
document, a position forgotten when old reservations are purged, a non-finite amount.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from google.cloud import firestore

from execution.brokers.paper import PaperBroker
from execution.clock import FakeClock
from execution.errors import InvalidIntentError, LimitWaitError, PriceUnavailableError
from execution.firestore.reservations import FirestoreReservationManager, inflight_ref
from execution.models import BrokerOrder, ExecutionResult, OrderRequest, Outcome, TradeIntent
from execution.reservations import Acquired, ReservationRequest
from tests.support.builders import (
    FAST_POLICY,
    CountingBroker,
    emulator_service,
    intent_id_at_broker,
    make_intent,
    reservation,
)
from tests.support.positions import positions_of

FAST_TTL = timedelta(seconds=30)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


class InterleavingBroker(CountingBroker):
    """A paper broker that, inside one intent's broker call, runs `during` first (keyed by the
    intent id the client order id carries)."""

    def __init__(self, inner: PaperBroker) -> None:
        super().__init__(inner)
        self.during: dict[str, Callable[[], object]] = {}
        self.seen: dict[str, object] = {}

    def place_order(self, order: OrderRequest) -> BrokerOrder:
        intent_id = intent_id_at_broker(order.client_order_id)
        hook = self.during.pop(intent_id, None)
        if hook is not None:
            try:
                self.seen[intent_id] = hook()
            except Exception as exc:  # kept for the test to assert on
                self.seen[intent_id] = exc
        return super().place_order(order)


@pytest.fixture
def broker(db: firestore.Client, clock: FakeClock) -> InterleavingBroker:
    return InterleavingBroker(PaperBroker(db, clock=clock, policy=FAST_POLICY))


def account(db: firestore.Client, intent: TradeIntent, **fields: Any) -> None:
    db.collection("tenants", intent.tenant_id, "accounts").document(intent.broker_account_id).set(
        fields
    )


def execute(
    db: firestore.Client, clock: FakeClock, broker: CountingBroker, intent: TradeIntent
) -> ExecutionResult:
    return emulator_service(db, clock, broker=broker).engine.execute_intent(intent)


def account_state(db: firestore.Client, intent: TradeIntent) -> dict[str, Any]:
    snap = inflight_ref(db, intent.tenant_id, intent.broker_account_id).get()
    return snap.to_dict() or {}


def test_a_buy_inside_another_buys_broker_call_cannot_pass_the_position_limit(
    db: firestore.Client, clock: FakeClock, broker: InterleavingBroker
) -> None:
    first = make_intent(qty=10)
    second = make_intent(qty=10, broker_account_id=first.broker_account_id)
    account(db, first, max_position_qty=10)
    broker.during[first.client_intent_id] = lambda: execute(db, clock, broker, second)

    placed = execute(db, clock, broker, first)
    retried = execute(db, clock, broker, second)  # Pub/Sub's redelivery once the first is placed

    assert placed.outcome is Outcome.PLACED
    assert isinstance(broker.seen[first.client_intent_id], LimitWaitError)
    assert (retried.outcome, retried.reason) == (
        Outcome.REJECTED,
        "max_position_exceeded: 20 > 10",
    )
    assert broker.place_calls == 1
    assert positions_of(account_state(db, first)) == {"AAPL": 10}


def test_an_intent_inside_another_broker_call_waits_on_the_daily_order_limit(
    db: firestore.Client, clock: FakeClock, broker: InterleavingBroker
) -> None:
    first = make_intent()
    second = make_intent(broker_account_id=first.broker_account_id)
    account(db, first, max_daily_orders=1)
    broker.during[first.client_intent_id] = lambda: execute(db, clock, broker, second)

    execute(db, clock, broker, first)
    retried = execute(db, clock, broker, second)

    assert isinstance(broker.seen[first.client_intent_id], LimitWaitError)
    assert (retried.outcome, retried.reason) == (
        Outcome.REJECTED,
        "max_daily_orders_reached: 1 of 1 used today (UTC)",
    )
    assert broker.place_calls == 1


def test_a_waiting_intent_passes_once_the_intent_in_flight_ends_without_an_order(
    db: firestore.Client, clock: FakeClock, broker: InterleavingBroker
) -> None:
    held = make_intent(dry_run=True)
    waiting = make_intent(broker_account_id=held.broker_account_id)
    account(db, held, max_daily_orders=1, max_position_qty=1)
    manager = FirestoreReservationManager(db, clock=clock, ttl=FAST_TTL, policy=FAST_POLICY)
    lease = manager.acquire(request_of(held))
    assert isinstance(lease, Acquired)

    with pytest.raises(LimitWaitError):
        execute(db, clock, broker, waiting)
    lease.handle.release(Outcome.DRY_RUN)
    result = execute(db, clock, broker, waiting)

    assert result.outcome is Outcome.PLACED
    assert account_state(db, held)["placed_orders"] == {clock().date().isoformat(): 1}


def test_a_declared_notional_cannot_shrink_the_order_notional_cap(
    db: firestore.Client, clock: FakeClock, broker: InterleavingBroker
) -> None:
    intent = make_intent(qty=1000, limit_price=100.0, notional_usd=1.0)
    account(db, intent, max_order_notional_usd=10000.0, max_inflight_usd=1e9)

    result = execute(db, clock, broker, intent)

    assert (result.outcome, result.reason) == (
        Outcome.REJECTED,
        "max_order_notional_exceeded: 100000 > 10000 USD",
    )
    assert reservation(db, intent.tenant_id, intent.client_intent_id)["amount_usd"] == 100000.0
    assert broker.place_calls == 0


def test_a_market_order_reserves_its_worth_at_the_quote_above_a_smaller_declared_notional(
    db: firestore.Client, clock: FakeClock, broker: InterleavingBroker
) -> None:
    intent = make_intent(order_type="market", limit_price=None, qty=1000, notional_usd=1.0)
    db.collection("market_quotes").document(intent.symbol).set(
        {"bid": 99.99, "ask": 100.0, "ts": clock()}
    )
    account(db, intent, max_inflight_usd=50000.0)

    result = execute(db, clock, broker, intent)

    assert (result.outcome, result.reason) == (
        Outcome.REJECTED,
        "max_inflight_usd_exceeded: 100000 > 50000 USD",
    )
    assert broker.place_calls == 0


@pytest.mark.parametrize(
    "fields",
    [{"max_inflight_usd": "10k"}, {"max_position_qty": "ten"}, {"max_daily_orders": [1]}],
)
def test_a_malformed_account_limit_rejects_as_risk_data_unavailable(
    db: firestore.Client, clock: FakeClock, broker: InterleavingBroker, fields: dict[str, Any]
) -> None:
    intent = make_intent()
    account(db, intent, **fields)

    result = execute(db, clock, broker, intent)

    assert (result.outcome, result.reason) == (Outcome.REJECTED, "risk_data_unavailable")
    stored = reservation(db, intent.tenant_id, intent.client_intent_id)
    assert (stored["status"], stored["outcome"]) == ("released", "rejected")
    assert broker.place_calls == 0


def test_the_position_survives_the_purge_of_the_reservations_that_built_it(
    db: firestore.Client, clock: FakeClock, broker: InterleavingBroker
) -> None:
    first = make_intent(qty=5, symbol="BRK.B")
    account(db, first, max_position_qty=10)
    execute(db, clock, broker, first)
    # The TTL policy deletes finished reservations after RESERVATION_RETENTION_DAYS.
    db.collection("tenants", first.tenant_id, "execution_reservations").document(
        first.client_intent_id
    ).delete()

    later = make_intent(qty=6, symbol="BRK.B", broker_account_id=first.broker_account_id)
    result = execute(db, clock, broker, later)

    assert (result.outcome, result.reason) == (
        Outcome.REJECTED,
        "max_position_exceeded: 11 > 10",
    )
    assert positions_of(account_state(db, first)) == {"BRK.B": 5}


def test_a_placed_release_moves_the_lease_into_the_position_in_one_commit(
    db: firestore.Client, clock: FakeClock, broker: InterleavingBroker
) -> None:
    buy = make_intent(qty=4)
    sell = make_intent(qty=1.5, side="sell", broker_account_id=buy.broker_account_id)
    account(db, buy, max_position_qty=10, max_inflight_usd=1000.0)

    outcomes = [execute(db, clock, broker, intent).outcome for intent in (buy, sell)]

    state = account_state(db, buy)
    assert outcomes == [Outcome.PLACED, Outcome.PLACED]
    assert (state["leases"], positions_of(state)) == ({}, {"AAPL": 2.5})
    assert state["placed_orders"] == {clock().date().isoformat(): 2}


@pytest.mark.parametrize(("amount", "qty"), [(math.nan, 1.0), (-5.0, 1.0), (5.0, math.inf)])
def test_the_acquire_refuses_a_non_finite_or_negative_amount_and_writes_nothing(
    db: firestore.Client, clock: FakeClock, amount: float, qty: float
) -> None:
    intent = make_intent()
    account(db, intent, max_inflight_usd=1000.0)
    manager = FirestoreReservationManager(db, clock=clock, ttl=FAST_TTL, policy=FAST_POLICY)

    with pytest.raises(InvalidIntentError):
        manager.acquire(request_of(intent, amount_usd=amount, qty=qty))

    assert not inflight_ref(db, intent.tenant_id, intent.broker_account_id).get().exists


def request_of(intent: TradeIntent, **overrides: Any) -> ReservationRequest:
    fields: dict[str, Any] = {
        "tenant_id": intent.tenant_id,
        "broker_account_id": intent.broker_account_id,
        "client_intent_id": intent.client_intent_id,
        "symbol": intent.symbol,
        "side": intent.side,
        "qty": intent.qty,
        "amount_usd": intent.qty * (intent.limit_price or 0.0),
        "payload_hash": intent.payload_hash(),
    }
    fields.update(overrides)
    return ReservationRequest(**fields)


@pytest.mark.parametrize(
    ("quote", "declared"),
    [(None, 1.0), ({"bid": math.nan, "ask": 100.0}, None), ({"bid": -1.0, "ask": 100.0}, None)],
)
def test_a_market_order_without_a_usable_quote_waits_and_reserves_nothing(
    db: firestore.Client,
    clock: FakeClock,
    broker: InterleavingBroker,
    quote: dict[str, float] | None,
    declared: float | None,
) -> None:
    symbol = f"Q{uuid.uuid4().hex[:8].upper()}"
    intent = make_intent(
        order_type="market", limit_price=None, side="sell", symbol=symbol, notional_usd=declared
    )
    if quote is not None:
        db.collection("market_quotes").document(symbol).set({**quote, "ts": clock()})
    account(db, intent, max_inflight_usd=1000.0)

    with pytest.raises(PriceUnavailableError):
        execute(db, clock, broker, intent)

    reservations = db.collection("tenants", intent.tenant_id, "execution_reservations")
    assert not reservations.document(intent.client_intent_id).get().exists
    assert broker.place_calls == 0
