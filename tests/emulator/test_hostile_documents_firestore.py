"""Malformed quotes and account documents on the emulator, through the real engine.

A number that enters a limit or an amount must be finite, positive where it prices something, and
bounded: a NaN quote once sized a market order at NaN and was admitted by every comparison, and a
lax account limit read "1e5" or `true` as a number. Here each such document is written to the
emulator as an operator or a broken feed would write it, and the intent goes through the engine.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import pytest
from google.cloud import firestore

from execution.brokers.paper import PaperBroker
from execution.clock import FakeClock
from execution.errors import BudgetWaitError, PriceUnavailableError
from execution.models import ExecutionResult, Outcome, TradeIntent
from tests.support.builders import (
    FAST_POLICY,
    CountingBroker,
    emulator_service,
    fast_settings,
    make_intent,
    reservation,
    unique,
)
from tests.unit.fakes import logged


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def broker(db: firestore.Client, clock: FakeClock) -> CountingBroker:
    return CountingBroker(PaperBroker(db, clock=clock, policy=FAST_POLICY))


@pytest.fixture
def symbol() -> str:
    """A symbol of this test alone, so its quote document is its own."""
    return unique("Q").upper().replace("-", "")[:12]


def write_quote(db: firestore.Client, clock: FakeClock, symbol: str, **fields: Any) -> None:
    db.collection("market_quotes").document(symbol).set({"ts": clock(), **fields})


def write_account(db: firestore.Client, intent: TradeIntent, **fields: Any) -> None:
    db.collection("tenants", intent.tenant_id, "accounts").document(intent.broker_account_id).set(
        fields
    )


def execute(
    db: firestore.Client,
    clock: FakeClock,
    broker: CountingBroker,
    intent: TradeIntent,
    **settings: Any,
) -> ExecutionResult:
    service = emulator_service(db, clock, settings=fast_settings(**settings), broker=broker)
    return service.engine.execute_intent(intent)


def reservation_exists(db: firestore.Client, intent: TradeIntent) -> bool:
    ref = db.collection("tenants", intent.tenant_id, "execution_reservations")
    return bool(ref.document(intent.client_intent_id).get().exists)


MALFORMED_QUOTES: dict[str, dict[str, Any]] = {
    "NaN bid": {"bid": math.nan, "ask": 100.0},
    "infinite ask": {"bid": 99.0, "ask": math.inf},
    "zero bid": {"bid": 0.0, "ask": 100.0},
    "negative ask": {"bid": 99.0, "ask": -100.0},
    "crossed": {"bid": 101.0, "ask": 100.0},
    "string price": {"bid": "99", "ask": "100"},
    "boolean price": {"bid": True, "ask": True},
    "absurd price": {"bid": 1e300, "ask": 1e300},
}


# --- quotes --------------------------------------------------------------------------------


@pytest.mark.parametrize("fields", MALFORMED_QUOTES.values(), ids=MALFORMED_QUOTES)
def test_a_share_sized_market_order_with_a_malformed_quote_waits_as_for_a_missing_quote(
    db: firestore.Client,
    clock: FakeClock,
    broker: CountingBroker,
    symbol: str,
    fields: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="execution")
    write_quote(db, clock, symbol, **fields)
    intent = make_intent(symbol=symbol, order_type="market", limit_price=None, qty=10)
    write_account(db, intent, max_inflight_usd=5000.0)

    with pytest.raises(PriceUnavailableError):
        execute(db, clock, broker, intent)

    # Nothing was reserved (no NaN lease on the account's budget) and nothing reached the broker.
    assert reservation_exists(db, intent) is False
    assert broker.place_calls == 0
    [malformed] = logged(caplog.records, "exec.quote.malformed")
    assert malformed["symbol"] == symbol


def test_a_nan_quote_never_lets_a_later_order_past_the_accounts_budget(
    db: firestore.Client, clock: FakeClock, broker: CountingBroker, symbol: str
) -> None:
    write_quote(db, clock, symbol, bid=math.nan, ask=100.0)
    sell = make_intent(symbol=symbol, side="sell", order_type="market", limit_price=None, qty=10)
    write_account(db, sell, max_inflight_usd=150.0)
    with pytest.raises(PriceUnavailableError):
        execute(db, clock, broker, sell)
    over_budget = make_intent(
        symbol=symbol, broker_account_id=sell.broker_account_id, qty=2, limit_price=100.0
    )

    # 200 USD against a budget of 150: it waits. A NaN lease held by the sell would have made
    # every sum on the account NaN, and NaN > 150 is False: admitted.
    with pytest.raises(BudgetWaitError):
        execute(db, clock, broker, over_budget)

    assert broker.place_calls == 0


def test_a_limit_order_with_a_nan_quote_routes_as_without_a_quote(
    db: firestore.Client, clock: FakeClock, broker: CountingBroker, symbol: str
) -> None:
    write_quote(db, clock, symbol, bid=math.nan, ask=100.0)
    intent = make_intent(symbol=symbol, qty=1, limit_price=100.0)

    result = execute(db, clock, broker, intent)

    assert (result.outcome, broker.place_calls) == (Outcome.PLACED, 1)
    assert reservation(db, intent.tenant_id, intent.client_intent_id)["amount_usd"] == 100.0


def test_a_strict_router_denies_a_limit_order_whose_quote_is_nan_as_unavailable(
    db: firestore.Client, clock: FakeClock, broker: CountingBroker, symbol: str
) -> None:
    write_quote(db, clock, symbol, bid=math.nan, ask=100.0)
    intent = make_intent(symbol=symbol, qty=1, limit_price=100.0)

    result = execute(db, clock, broker, intent, router_strict=True)

    assert (result.outcome, broker.place_calls) == (Outcome.REJECTED, 0)
    assert result.reason is not None and "quote_unavailable" in result.reason


# --- account documents ---------------------------------------------------------------------


MALFORMED_ACCOUNTS: dict[str, dict[str, Any]] = {
    "notional limit as a string": {"max_order_notional_usd": "1e5"},
    "notional limit as a boolean": {"max_order_notional_usd": True},
    "infinite position limit": {"max_position_qty": math.inf},
    "position limit past its bound": {"max_position_qty": 1e300},
    "daily orders as a string": {"max_daily_orders": "7"},
    "daily orders past its bound": {"max_daily_orders": 10**12},
    "in-flight budget past its bound": {"max_inflight_usd": 1e300},
}


@pytest.mark.parametrize("fields", MALFORMED_ACCOUNTS.values(), ids=MALFORMED_ACCOUNTS)
def test_a_malformed_account_limit_rejects_as_risk_data_unavailable(
    db: firestore.Client,
    clock: FakeClock,
    broker: CountingBroker,
    fields: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="execution")
    intent = make_intent(qty=1, limit_price=100.0)
    write_account(db, intent, **fields)

    result = execute(db, clock, broker, intent)

    assert (result.outcome, broker.place_calls) == (Outcome.REJECTED, 0)
    assert result.reason == "risk_data_unavailable"
    assert reservation(db, intent.tenant_id, intent.client_intent_id)["outcome"] == "rejected"
    [unavailable] = logged(caplog.records, "exec.risk.data_unavailable")
    assert (
        f"MalformedAccountError: malformed account document: {next(iter(fields))}"
        in (unavailable["error"])
    )


def test_a_malformed_account_limit_passes_with_risk_configured_fail_open(
    db: firestore.Client, clock: FakeClock, broker: CountingBroker
) -> None:
    intent = make_intent(qty=1, limit_price=100.0)
    write_account(db, intent, max_order_notional_usd="1e5")

    result = execute(db, clock, broker, intent, risk_fail_open=True)

    assert (result.outcome, broker.place_calls) == (Outcome.PLACED, 1)
