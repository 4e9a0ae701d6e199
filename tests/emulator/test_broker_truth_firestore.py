"""The broker is the truth, on the Firestore emulator: outlived attempts, shared broker accounts,
refused lookups and trading modes (issue "No order the records don't know").

An outlived (zombie) attempt is staged deterministically: its broker wrapper, at the moment the
attempt is inside its broker call, advances the clock past the lease and runs the redelivery on a
second instance to completion before the paused call goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from google.cloud import firestore

from devtools.alpaca_sandbox import AlpacaSandbox, status
from execution.brokers.alpaca import AlpacaBroker
from execution.brokers.paper import PaperBroker
from execution.clock import FakeClock
from execution.errors import (
    BrokerTransientError,
    LeaseTooShortError,
    OrderConflictError,
    RetryableError,
)
from execution.models import BrokerOrder, OrderRequest, Outcome, TradeIntent
from execution.risk import RiskDecision
from execution.settings import AgentMode
from tests.support.builders import (
    FAST_POLICY,
    CountingBroker,
    PausedInsideTheCall,
    client_order_id_of,
    emulator_service,
    fast_settings,
    live,
    make_intent,
    reservation,
    unique,
)

MAX_AGE_S = 300.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def settings_with_max_age() -> Any:
    return fast_settings(intent_max_age_seconds=MAX_AGE_S)


def paper_orders(db: firestore.Client, intent: TradeIntent) -> list[dict[str, Any]]:
    return [
        snap.to_dict() or {}
        for snap in db.collection("tenants", intent.tenant_id, "paper_orders").stream()
        if (snap.to_dict() or {}).get("client_order_id") == client_order_id_of(intent)
    ]


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.getMessage() == name]


def outlive_the_lease(
    db: firestore.Client, clock: FakeClock, intent: TradeIntent, *, then: Callable[[], None]
) -> Callable[[], None]:
    """What happens while the first attempt is paused: its lease and the intent's age run out,
    `then` (an operator's action, say) happens, and a redelivery on another instance runs."""

    def meanwhile() -> None:
        clock.advance(max(fast_settings().reservation_ttl_seconds, MAX_AGE_S) + 1)
        then()
        redelivery = emulator_service(db, clock, settings=settings_with_max_age())
        redelivery.engine.execute_intent(intent)

    return meanwhile


# --- 1. an outlived attempt places after its take-over recorded stale / halted ---------------


def test_an_order_placed_after_the_take_over_recorded_stale_is_recorded_placed_and_alerted(
    db: firestore.Client, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    intent = make_intent(created_at=clock())
    paper = PaperBroker(db, clock=clock, policy=FAST_POLICY)
    zombie = PausedInsideTheCall(paper, outlive_the_lease(db, clock, intent, then=lambda: None))
    service = emulator_service(db, clock, settings=settings_with_max_age(), broker=zombie)

    with caplog.at_level(logging.ERROR):
        result = service.engine.execute_intent(intent)

    doc = reservation(db, intent.tenant_id, intent.client_intent_id)
    [order] = paper_orders(db, intent)
    assert result.outcome is Outcome.PLACED
    assert (doc["status"], doc["outcome"]) == ("released", "placed")
    assert doc["broker_order_id"] == order["broker_order_id"]
    assert doc["repair"]["previous_outcome"] == "stale"
    assert doc["repair"]["found_by"] == "outlived_attempt 1"
    assert doc["repair"]["cancel"] == "not_cancelable: filled"
    assert len(events(caplog, "exec.contradiction.repaired")) == 1


def test_an_order_placed_after_the_take_over_recorded_halted_is_cancelled_where_still_open(
    db: firestore.Client,
    clock: FakeClock,
    alpaca: AlpacaSandbox,
    alpaca_broker: AlpacaBroker,
) -> None:
    intent = make_intent(tenant_id=unique("tenant"))

    def switch_on() -> None:
        db.collection("tenants", intent.tenant_id, "ops").document("execution_kill_switch").set(
            {"enabled": True}
        )

    def meanwhile() -> None:
        clock.advance(fast_settings().reservation_ttl_seconds + 1)
        switch_on()
        emulator_service(db, clock, settings=live(), broker=alpaca_broker).engine.execute_intent(
            intent
        )

    zombie = PausedInsideTheCall(alpaca_broker, meanwhile)
    service = emulator_service(
        db, clock, settings=live(shared_read_max_age_seconds=0.0), broker=zombie
    )

    service.engine.execute_intent(intent)

    doc = reservation(db, intent.tenant_id, intent.client_intent_id)
    [order] = [
        o for o in alpaca.orders.values() if o["client_order_id"] == client_order_id_of(intent)
    ]
    assert doc["broker_order_id"] == order["id"]
    assert (doc["outcome"], doc["repair"]["previous_outcome"]) == ("placed", "halted")
    assert doc["repair"]["cancel"] == "requested"
    assert order["status"] in {"canceled", "pending_cancel"}


def test_an_attempt_whose_lease_lapsed_before_the_broker_call_places_nothing(
    db: firestore.Client, clock: FakeClock
) -> None:
    intent = make_intent(created_at=clock())
    broker = CountingBroker(PaperBroker(db, clock=clock, policy=FAST_POLICY))

    class PausedInRisk:
        """A risk gate during which the process is paused and the redelivery takes over."""

        def validate(self, *args: Any) -> RiskDecision:
            outlive_the_lease(db, clock, intent, then=lambda: None)()
            return RiskDecision(True)

    service = emulator_service(
        db, clock, settings=settings_with_max_age(), broker=broker, risk=PausedInRisk()
    )

    with pytest.raises(LeaseTooShortError):
        service.engine.execute_intent(intent)

    doc = reservation(db, intent.tenant_id, intent.client_intent_id)
    assert (doc["status"], doc["outcome"], doc["attempt"]) == ("released", "stale", 2)
    assert broker.place_calls == 0
    assert paper_orders(db, intent) == []


# --- 2. two tenants, one intent id, one broker account ----------------------------------------


def test_two_tenants_with_the_same_intent_id_each_get_their_own_order_on_one_broker_account(
    db: firestore.Client, clock: FakeClock, alpaca: AlpacaSandbox, alpaca_broker: AlpacaBroker
) -> None:
    shared_id = unique("intent")
    first = make_intent(tenant_id=unique("tenant-a"), client_intent_id=shared_id, qty=1)
    second = make_intent(
        tenant_id=unique("tenant-b"), client_intent_id=shared_id, qty=2, symbol="MSFT"
    )
    service = emulator_service(db, clock, settings=live(), broker=alpaca_broker)

    results = [service.engine.execute_intent(intent) for intent in (first, second)]

    orders = {o["client_order_id"]: o for o in alpaca.orders.values()}
    assert [r.outcome for r in results] == [Outcome.PLACED, Outcome.PLACED]
    for intent, result in zip((first, second), results, strict=True):
        order = orders[client_order_id_of(intent)]
        doc = reservation(db, intent.tenant_id, shared_id)
        assert (order["symbol"], float(order["qty"])) == (intent.symbol, intent.qty)
        assert doc["broker_order_id"] == result.broker_order_id == order["id"]
        assert doc["client_order_id"] == client_order_id_of(intent)


def test_a_redelivery_never_adopts_an_order_under_its_id_that_is_not_the_intents(
    db: firestore.Client, clock: FakeClock, alpaca: AlpacaSandbox, alpaca_broker: AlpacaBroker
) -> None:
    intent = make_intent(qty=3)
    alpaca.inject_next("POST", status(503, "upstream unavailable", accept=False))
    service = emulator_service(db, clock, settings=live(), broker=alpaca_broker)
    with pytest.raises(BrokerTransientError):
        service.engine.execute_intent(intent)
    # Someone else's order appears under the intent's client order id (another qty).
    alpaca_broker.place_order(
        OrderRequest.from_intent(make_intent(qty=7), None, client_order_id_of(intent))
    )

    with pytest.raises(OrderConflictError):
        service.engine.execute_intent(intent)

    doc = reservation(db, intent.tenant_id, intent.client_intent_id)
    assert doc["outcome"] != "placed" and doc["broker_order_id"] is None


# --- 3. a refused lookup is an outage, never a dead letter ------------------------------------


@pytest.mark.parametrize("code", [401, 403, 404, 500])
def test_a_refused_lookup_after_an_accepted_order_is_retried_then_records_the_order(
    db: firestore.Client,
    clock: FakeClock,
    alpaca: AlpacaSandbox,
    alpaca_broker: AlpacaBroker,
    code: int,
) -> None:
    intent = make_intent()
    service = emulator_service(db, clock, settings=live(), broker=alpaca_broker)
    alpaca.inject_next("POST", status(503, "upstream unavailable", accept=True))
    with pytest.raises(BrokerTransientError):
        service.engine.execute_intent(intent)
    alpaca.inject_next("GET", status(code, "refused"))

    with pytest.raises(RetryableError):
        service.engine.execute_intent(intent)
    third = service.engine.execute_intent(intent)

    [order] = alpaca.orders.values()
    doc = reservation(db, intent.tenant_id, intent.client_intent_id)
    assert third.outcome is Outcome.PLACED
    assert (doc["outcome"], doc["broker_order_id"], doc["attempt"]) == ("placed", order["id"], 3)


# --- 5. OFF and OBSERVE never touch the broker, lookups included -----------------------------


class LookupCountingBroker(CountingBroker):
    """Counts lookups as well as placements; fails the first `failures` placements (503)."""

    def __init__(self, inner: Any, *, failures: int = 0) -> None:
        super().__init__(inner)
        self.lookups = 0
        self._failures = failures

    def place_order(self, order: OrderRequest) -> BrokerOrder:
        if self._failures:
            self._failures -= 1
            raise BrokerTransientError("503 before anything was placed")
        return super().place_order(order)

    def get_order_by_client_order_id(self, *args: str) -> BrokerOrder | None:
        self.lookups += 1
        return super().get_order_by_client_order_id(*args)


@pytest.mark.parametrize("mode", [AgentMode.OFF, AgentMode.OBSERVE])
def test_a_redelivery_under_off_or_observe_never_asks_the_broker(
    db: firestore.Client, clock: FakeClock, mode: AgentMode
) -> None:
    intent = make_intent()
    broker = LookupCountingBroker(PaperBroker(db, clock=clock, policy=FAST_POLICY), failures=1)
    with pytest.raises(BrokerTransientError):
        emulator_service(db, clock, broker=broker).engine.execute_intent(intent)
    broker.lookups = broker.place_calls = 0

    result = emulator_service(
        db, clock, settings=fast_settings(agent_mode=mode), broker=broker
    ).engine.execute_intent(intent)

    assert (result.outcome, result.attempt) == (Outcome.HALTED, 2)
    assert (broker.lookups, broker.place_calls) == (0, 0)
