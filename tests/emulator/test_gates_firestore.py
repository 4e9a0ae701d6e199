"""Each trading gate on the Firestore emulator, through the real engine and paper broker."""

from __future__ import annotations

from typing import Any

import pytest
from google.cloud import firestore

from devtools import alpaca_sandbox
from devtools.alpaca_sandbox import AlpacaSandbox
from execution.brokers.alpaca import AlpacaBroker
from execution.brokers.paper import PaperBroker
from execution.clock import FakeClock
from execution.models import ExecutionResult, Outcome, TradeIntent
from execution.settings import AgentMode
from tests.support.builders import (
    FAST_POLICY,
    CountingBroker,
    emulator_service,
    fast_settings,
    make_intent,
    reservation,
)


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
