"""Each trading gate on the Firestore emulator, through the real engine and paper broker."""

from __future__ import annotations

import logging
import math
from typing import Any

import pytest
from google.cloud import firestore

from devtools import alpaca_sandbox
from devtools.alpaca_sandbox import AlpacaSandbox
from execution.brokers.alpaca import AlpacaBroker
from execution.brokers.paper import PaperBroker
from execution.clock import FakeClock
from execution.errors import PriceUnavailableError
from execution.models import ExecutionResult, Outcome, TradeIntent
from execution.settings import AgentMode
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


def account(db: firestore.Client, intent: TradeIntent, **fields: Any) -> None:
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


def test_an_order_over_the_notional_limit_is_rejected_before_the_broker(
    db: firestore.Client, clock: FakeClock, broker: CountingBroker
) -> None:
    intent = make_intent(qty=10, limit_price=100.0)
    account(db, intent, max_order_notional_usd=999.0)

    result = execute(db, clock, broker, intent)

    assert (result.outcome, broker.place_calls) == (Outcome.REJECTED, 0)
    assert result.reason is not None and result.reason.startswith("max_order_notional_exceeded")


def test_an_order_within_the_limits_is_placed(
    db: firestore.Client, clock: FakeClock, broker: CountingBroker
) -> None:
    intent = make_intent(qty=10, limit_price=100.0)
    account(db, intent, max_order_notional_usd=1000.0, allowed_symbols=["AAPL"])

    result = execute(db, clock, broker, intent)

    assert (result.outcome, broker.place_calls) == (Outcome.PLACED, 1)


def test_with_accounts_required_an_intent_for_an_unknown_account_never_reaches_the_broker(
    db: firestore.Client, clock: FakeClock, broker: CountingBroker
) -> None:
    known, typo = make_intent(), make_intent()
    account(db, known, max_order_notional_usd=1000.0)

    placed = execute(db, clock, broker, known, require_account_document=True)
    refused = execute(db, clock, broker, typo, require_account_document=True)

    assert placed.outcome is Outcome.PLACED
    assert (refused.outcome, broker.place_calls) == (Outcome.REJECTED, 1)
    assert refused.reason is not None and refused.reason.startswith("account_unknown")
    assert reservation(db, typo.tenant_id, typo.client_intent_id)["outcome"] == "rejected"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"allowed_symbols": ["MSFT"]}, "symbol_not_allowed"),
        ({"denied_symbols": ["AAPL"]}, "symbol_denied"),
    ],
)
def test_symbol_lists_are_enforced(
    db: firestore.Client,
    clock: FakeClock,
    broker: CountingBroker,
    fields: dict[str, Any],
    reason: str,
) -> None:
    intent = make_intent()
    account(db, intent, **fields)

    result = execute(db, clock, broker, intent)

    assert (result.outcome, broker.place_calls) == (Outcome.REJECTED, 0)
    assert result.reason is not None and result.reason.startswith(reason)


def test_unreadable_risk_data_rejects_by_default(
    db: firestore.Client, clock: FakeClock, broker: CountingBroker
) -> None:
    intent = make_intent()
    account(db, intent, max_order_notional_usd="a lot")

    result = execute(db, clock, broker, intent)

    assert (result.outcome, result.reason) == (Outcome.REJECTED, "risk_data_unavailable")
    assert broker.place_calls == 0
    assert reservation(db, intent.tenant_id, intent.client_intent_id)["outcome"] == "rejected"


def test_unreadable_risk_data_passes_when_configured_fail_open(
    db: firestore.Client, clock: FakeClock, broker: CountingBroker
) -> None:
    intent = make_intent()
    account(db, intent, max_order_notional_usd="a lot")

    result = execute(db, clock, broker, intent, risk_fail_open=True)

    assert (result.outcome, broker.place_calls) == (Outcome.PLACED, 1)


def test_the_environment_kill_switch_halts_without_a_broker_call(
    db: firestore.Client, clock: FakeClock, broker: CountingBroker
) -> None:
    intent = make_intent()

    result = execute(db, clock, broker, intent, execution_halted=True)

    assert (result.outcome, result.reason, broker.place_calls) == (
        Outcome.HALTED,
        "kill_switch_env",
        0,
    )


def test_the_global_kill_switch_halts_every_tenant_without_a_broker_call(
    db: firestore.Client, clock: FakeClock, broker: CountingBroker, reset_firestore: Any
) -> None:
    switch = db.collection("ops").document("execution_kill_switch")
    switch.set({"enabled": True})
    try:
        results = [
            execute(db, clock, broker, make_intent(tenant_id=tenant))
            for tenant in ("tenant-a", "tenant-b")
        ]
    finally:
        switch.set({"enabled": False})

    assert [(r.outcome, r.reason) for r in results] == [(Outcome.HALTED, "kill_switch_global")] * 2
    assert broker.place_calls == 0


def test_a_tenant_kill_switch_halts_only_that_tenant(
    db: firestore.Client, clock: FakeClock, broker: CountingBroker
) -> None:
    db.collection("tenants", "tenant-stopped", "ops").document("execution_kill_switch").set(
        {"enabled": True}
    )

    stopped = execute(db, clock, broker, make_intent(tenant_id="tenant-stopped"))
    other = execute(db, clock, broker, make_intent(tenant_id="tenant-running"))

    assert (stopped.outcome, stopped.reason) == (Outcome.HALTED, "kill_switch_tenant")
    assert other.outcome is Outcome.PLACED
    assert broker.place_calls == 1


@pytest.mark.parametrize("mode", [AgentMode.OFF, AgentMode.OBSERVE])
def test_off_and_observe_never_reach_the_broker(
    db: firestore.Client, clock: FakeClock, broker: CountingBroker, mode: AgentMode
) -> None:
    result = execute(db, clock, broker, make_intent(), agent_mode=mode)

    assert (result.outcome, result.reason) == (Outcome.HALTED, f"agent_mode_{mode.value.lower()}")
    assert broker.place_calls == 0


@pytest.mark.parametrize(
    ("mode", "outcome"), [(AgentMode.PAPER, Outcome.HALTED), (AgentMode.LIVE, Outcome.PLACED)]
)
def test_paper_mode_keeps_a_live_broker_away_and_live_mode_allows_it(
    db: firestore.Client, clock: FakeClock, mode: AgentMode, outcome: Outcome
) -> None:
    intent = make_intent()
    with AlpacaSandbox() as sandbox:
        live = AlpacaBroker(
            key_id=alpaca_sandbox.KEY_ID,
            secret_key=alpaca_sandbox.SECRET_KEY,
            base_url=sandbox.base_url,  # loopback: not Alpaca's paper host, so "live"
        )
        service = emulator_service(db, clock, settings=fast_settings(agent_mode=mode), broker=live)
        try:
            result = service.engine.execute_intent(intent)
        finally:
            live.close()
        orders = sandbox.orders

    assert result.outcome is outcome
    assert len(orders) == (1 if outcome is Outcome.PLACED else 0)


def test_the_daily_order_limit_counts_what_this_service_placed_today(
    db: firestore.Client, clock: FakeClock, broker: CountingBroker
) -> None:
    first = make_intent()
    account(db, first, max_daily_orders=2)
    same_account = {"broker_account_id": first.broker_account_id}

    results = [
        execute(db, clock, broker, intent)
        for intent in (first, make_intent(**same_account), make_intent(**same_account))
    ]

    assert [r.outcome for r in results] == [Outcome.PLACED, Outcome.PLACED, Outcome.REJECTED]
    assert results[2].reason == "max_daily_orders_reached: 2 of 2 used today (UTC)"
    assert broker.place_calls == 2


def test_the_daily_order_limit_starts_again_the_next_utc_day(
    db: firestore.Client, clock: FakeClock, broker: CountingBroker
) -> None:
    first = make_intent()
    account(db, first, max_daily_orders=1)
    execute(db, clock, broker, first)
    clock.advance(24 * 3600)

    result = execute(db, clock, broker, make_intent(broker_account_id=first.broker_account_id))

    assert result.outcome is Outcome.PLACED


def test_the_position_limit_bounds_the_net_quantity_placed(
    db: firestore.Client, clock: FakeClock, broker: CountingBroker
) -> None:
    first = make_intent(qty=3)
    account(db, first, max_position_qty=5)
    same = {"broker_account_id": first.broker_account_id}

    results = [
        execute(db, clock, broker, intent)
        for intent in (first, make_intent(qty=3, **same), make_intent(side="sell", qty=3, **same))
    ]

    assert [r.outcome for r in results] == [Outcome.PLACED, Outcome.REJECTED, Outcome.PLACED]
    assert results[1].reason == "max_position_exceeded: 6 > 5"


def test_an_account_trading_mode_narrows_agent_mode(
    db: firestore.Client, clock: FakeClock, broker: CountingBroker
) -> None:
    intent = make_intent()
    account(db, intent, trading_mode="OFF")

    result = execute(db, clock, broker, intent, agent_mode=AgentMode.LIVE)

    assert (result.outcome, result.reason, broker.place_calls) == (
        Outcome.HALTED,
        "account_mode_off",
        0,
    )


# --- malformed quotes and account documents ------------------------------------------------
# A number that enters a limit or an amount is finite, positive where it prices something, and
# bounded: a NaN quote once sized a market order at NaN and was admitted by every comparison, and
# a lax account limit read "1e5" or `true` as a number.


@pytest.fixture
def symbol() -> str:
    """A symbol of this test alone, so its quote document is its own."""
    return unique("Q").upper().replace("-", "")[:12]


def write_quote(db: firestore.Client, clock: FakeClock, symbol: str, **fields: Any) -> None:
    db.collection("market_quotes").document(symbol).set({"ts": clock(), **fields})


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
    account(db, intent, max_inflight_usd=5000.0)

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
    account(db, sell, max_inflight_usd=150.0)
    with pytest.raises(PriceUnavailableError):
        execute(db, clock, broker, sell)
    over_budget = make_intent(
        symbol=symbol, broker_account_id=sell.broker_account_id, qty=2, limit_price=100.0
    )

    # 200 USD against a budget of 150, nothing in flight: refused for good. A NaN lease held by
    # the sell would have made every sum on the account NaN, and NaN > 150 is False: admitted.
    result = execute(db, clock, broker, over_budget)

    assert result.outcome is Outcome.REJECTED
    assert result.reason is not None and result.reason.startswith("max_inflight_usd_exceeded")
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
    account(db, intent, **fields)

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
    account(db, intent, max_order_notional_usd="1e5")

    result = execute(db, clock, broker, intent, risk_fail_open=True)

    assert (result.outcome, broker.place_calls) == (Outcome.PLACED, 1)
