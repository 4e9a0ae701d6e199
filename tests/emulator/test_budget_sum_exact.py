"""The in-flight budget is summed exactly: at the cap admitted, a billionth over it waits.

An intent holds part of the account's `max_inflight_usd` (a lease taken through the Firestore
reservation adapter); a second intent is executed by the engine against the same account-state
document on the emulator. The amounts are decimals an intent may carry (at most 9 places) whose
float sum rounds across the cap: a float comparison (with or without a tolerance) admits an
order a billionth of a dollar over the cap, or refuses one exactly at it.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from google.cloud import firestore

from execution.brokers.paper import PaperBroker
from execution.clock import FakeClock
from execution.errors import BudgetWaitError
from execution.firestore.reservations import FirestoreReservationManager
from execution.models import Outcome, TradeIntent
from execution.reservations import Acquired, ReservationRequest
from tests.support.builders import FAST_POLICY, CountingBroker, emulator_service, make_intent


def hold(db: firestore.Client, clock: FakeClock, intent: TradeIntent, amount: float) -> None:
    """`intent` in flight: its lease holds `amount` of the account's budget."""
    manager = FirestoreReservationManager(
        db, clock=clock, ttl=timedelta(seconds=30), policy=FAST_POLICY
    )
    acquired = manager.acquire(
        ReservationRequest(
            tenant_id=intent.tenant_id,
            broker_account_id=intent.broker_account_id,
            client_intent_id=intent.client_intent_id,
            symbol=intent.symbol,
            side=intent.side,
            qty=intent.qty,
            amount_usd=amount,
            payload_hash=intent.payload_hash(),
        )
    )
    assert isinstance(acquired, Acquired)


def budget_case(
    db: firestore.Client, cap: float, held: float, price: float
) -> tuple[FakeClock, CountingBroker, TradeIntent, TradeIntent]:
    clock = FakeClock()
    first = make_intent(limit_price=held)
    second = make_intent(limit_price=price, broker_account_id=first.broker_account_id)
    db.collection("tenants", first.tenant_id, "accounts").document(first.broker_account_id).set(
        {"max_inflight_usd": cap}
    )
    hold(db, clock, first, held)
    return clock, CountingBroker(PaperBroker(db, clock=clock, policy=FAST_POLICY)), first, second


@pytest.mark.parametrize(
    ("cap", "held", "price"),
    [
        # 10000000.000000001 in decimals; exactly 1e7 in floats.
        (10_000_000.0, 4797785.325233454, 5202214.674766547),
        # 100.0000001: a float tolerance of a millionth let it through.
        (100.0, 60.0000004, 39.9999997),
    ],
)
def test_an_order_a_billionth_over_the_budget_in_decimals_waits(
    db: firestore.Client, cap: float, held: float, price: float
) -> None:
    clock, broker, _, second = budget_case(db, cap, held, price)

    with pytest.raises(BudgetWaitError):
        emulator_service(db, clock, broker=broker).engine.execute_intent(second)

    assert broker.place_calls == 0


@pytest.mark.parametrize(
    ("cap", "held", "price"),
    [
        (10_000_000.0, 4797785.325233454, 5202214.674766546),
        # 0.30000000000000004 in floats: over the cap; exactly at it in decimals.
        (0.3, 0.1, 0.2),
        (100.0, 60.0000004, 39.9999996),
    ],
)
def test_an_order_that_fills_the_budget_exactly_is_placed(
    db: firestore.Client, cap: float, held: float, price: float
) -> None:
    clock, broker, _, second = budget_case(db, cap, held, price)

    result = emulator_service(db, clock, broker=broker).engine.execute_intent(second)

    assert result.outcome is Outcome.PLACED
    assert broker.place_calls == 1
