"""Third adversarial review: a process paused inside its broker call past the end of its hold.

The real engine, sweeper and reconciler on the Firestore emulator, with the real `AlpacaBroker`
and the loopback Alpaca sandbox. An invocation passed every check, its lease had room for the
whole broker call, and it pauses right before its order leaves (a GC, a throttled CPU, a VM
pause). Its lease lapses; the sweeper expires it; once no broker call of the intent can land any
more by the contract's bound (the lease's expiry plus `BROKER_TIMEOUT_SECONDS` and
`CLOCK_SKEW_SECONDS`), the reconciler asks the broker, finds no order and ends the hold. Another
intent is admitted into the room the hold left, and placed. Then the paused process wakes and its
order lands.

Each layer did what it promises: one order per intent, both recorded `placed` (the outlived
release records what it placed: "the outcome we know beats the sweeper's guess"), the position
counted. But at the broker the account's net position is past `max_position_qty` — the hold was
ended on the bound "no call can land after the lease's expiry plus one call", which a process
paused between its last check and its send breaks, and no check before the send can stop it. The
other ways out each break another promise: keeping the hold until the order is seen would block
the account for good after every death (an account stuck longer than one TTL). Pinned here as the
known gap (docs/REVIEW-3-money.md, "Left"); the chaos tier excuses the same window (`clock_jump`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.cloud import firestore

from devtools.alpaca_sandbox import AlpacaSandbox
from execution.brokers.alpaca import AlpacaBroker
from execution.clock import FakeClock
from execution.models import ExecutionResult, Outcome
from tests.support.builders import (
    PausedInsideTheCall,
    emulator_service,
    live,
    make_intent,
    unique,
)

SETTINGS = live()
PAST_THE_LAST_CALL = timedelta(
    seconds=SETTINGS.reservation_ttl_seconds
    + SETTINGS.broker_call_seconds
    + SETTINGS.clock_skew_seconds
    + 1
)


@pytest.fixture(autouse=True)
def empty_project(reset_firestore: Any) -> None:
    """Sweeps and reconciles are project-wide: start each test from an empty database."""


@pytest.mark.xfail(
    strict=True,
    reason="known_gap: a process paused between its lease-room check and its send outlives "
    "the reconciler's bound; its order lands after its hold ended (docs/REVIEW-3-money.md)",
)
def test_an_order_sent_after_its_hold_ended_never_takes_the_position_past_its_limit(
    db: firestore.Client, alpaca: AlpacaSandbox, alpaca_broker: AlpacaBroker
) -> None:
    clock = FakeClock(datetime.now(UTC))
    tenant, account = unique("tenant"), unique("acct")
    db.collection("tenants", tenant, "accounts").document(account).set({"max_position_qty": 10.0})
    paused = make_intent(tenant_id=tenant, broker_account_id=account, qty=10, limit_price=10.0)
    later = make_intent(tenant_id=tenant, broker_account_id=account, qty=10, limit_price=10.0)
    meanwhile: list[ExecutionResult] = []

    def lease_lapses_hold_ends_and_another_intent_fills_the_room() -> None:
        clock.advance(PAST_THE_LAST_CALL.total_seconds())
        service.sweeper.sweep()
        report = service.reconciler.reconcile()
        assert report.holds_released == 1, report
        meanwhile.append(service.engine.execute_intent(later))

    broker = PausedInsideTheCall(
        alpaca_broker, lease_lapses_hold_ends_and_another_intent_fills_the_room
    )
    service = emulator_service(db, clock, settings=SETTINGS, broker=broker)

    woken = service.engine.execute_intent(paused)

    assert meanwhile[0].outcome is Outcome.PLACED
    assert woken.outcome is Outcome.PLACED  # one order per intent, each recorded
    net = sum(float(order["qty"]) for order in alpaca.orders.values() if order["side"] == "buy")
    assert net <= 10.0, f"the broker holds {net} shares of {paused.symbol}, the limit is 10"
