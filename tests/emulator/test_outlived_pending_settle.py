"""An outlived attempt whose settle finds the newer attempt still live, on the Firestore emulator.

Attempt 1 (Z) is paused inside its broker call past its lease. A redelivery (A2) takes the intent
over, asks the broker (no order yet) and is held, live, until Z's settle has answered: the kill
switch is on, so A2 then records `halted`. Z resumes, its order lands, its release is fenced and
its settle finds A2's lease live (`Settlement.PENDING`): Z's delivery is retried. Before the fix,
Z's redelivery found the final `halted` record and acked it as a `duplicate` while the broker held
an open order the record did not know (until the reconciler ran). Now Z's settle leaves a marker
on the reservation, and the redelivery that finds it asks the broker and repairs the record.

Two threads, handed over by events (never by timing): A2 runs on its own thread and blocks right
after its broker lookup until Z's delivery has ended.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Any

import pytest
from google.cloud import firestore

from devtools.alpaca_sandbox import AlpacaSandbox, malformed_json_after_accept
from execution.broker_truth import BrokerTruth
from execution.brokers.alpaca import AlpacaBroker
from execution.clock import FakeClock
from execution.errors import RetryableError
from execution.firestore.reservation_records import FirestoreReservationRecords
from execution.models import BrokerOrder, ExecutionResult, OrderRequest, Outcome, TradeIntent
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

HANDOVER_GUARD_SECONDS = 60.0
"""Only a guard against a hung test: every handover is an event, never a timed wait."""


class HeldAfterLookup(CountingBroker):
    """The newer attempt's broker: after its lookup answers, it tells `looked_up` and waits for
    `resume` (the outlived attempt's delivery has ended)."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.looked_up = threading.Event()
        self.resume = threading.Event()

    def get_order_by_client_order_id(
        self, tenant_id: str, broker_account_id: str, client_order_id: str
    ) -> BrokerOrder | None:
        found = super().get_order_by_client_order_id(tenant_id, broker_account_id, client_order_id)
        self.looked_up.set()
        assert self.resume.wait(HANDOVER_GUARD_SECONDS), "the outlived attempt never ended"
        return found


def _status_at(alpaca: AlpacaSandbox, order: BrokerOrder) -> str:
    [held] = [o for o in alpaca.orders.values() if o["id"] == order.broker_order_id]
    status: str = held["status"]
    return status


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.getMessage() == name]


def _run_zombie_past_a_live_take_over(
    db: firestore.Client,
    alpaca: AlpacaSandbox,
    alpaca_broker: AlpacaBroker,
    intent: TradeIntent,
    *,
    lose_the_answer: bool,
) -> tuple[ExecutionResult, ExecutionResult]:
    """Z's first delivery (must retry), then its redelivery; A2's result. See the module doc."""
    clock = FakeClock()
    take_over_broker = HeldAfterLookup(alpaca_broker)
    taken_over: list[ExecutionResult] = []

    def take_over() -> None:
        service = emulator_service(db, clock, settings=live(), broker=take_over_broker)
        taken_over.append(service.engine.execute_intent(intent))

    a2 = threading.Thread(target=take_over, name="attempt-2")

    def meanwhile() -> None:
        clock.advance(fast_settings().reservation_ttl_seconds + 1)
        db.collection("tenants", intent.tenant_id, "ops").document("execution_kill_switch").set(
            {"enabled": True}
        )
        a2.start()
        assert take_over_broker.looked_up.wait(HANDOVER_GUARD_SECONDS), "A2 never asked"
        if lose_the_answer:
            alpaca.inject("POST", malformed_json_after_accept())

    zombie = PausedInsideTheCall(alpaca_broker, meanwhile)
    service = emulator_service(
        db, clock, settings=live(shared_read_max_age_seconds=0.0), broker=zombie
    )
    try:
        with pytest.raises(RetryableError):
            service.engine.execute_intent(intent)
    finally:
        take_over_broker.resume.set()
        a2.join(HANDOVER_GUARD_SECONDS)
    assert not a2.is_alive()
    [a2_result] = taken_over
    redelivered = service.engine.execute_intent(intent)  # Pub/Sub delivers Z's message again
    return a2_result, redelivered


@pytest.mark.parametrize("lose_the_answer", [False, True], ids=["answer_known", "answer_lost"])
def test_a_redelivery_after_a_pending_settle_repairs_the_record_to_the_zombies_order(
    db: firestore.Client,
    alpaca: AlpacaSandbox,
    alpaca_broker: AlpacaBroker,
    caplog: pytest.LogCaptureFixture,
    lose_the_answer: bool,
) -> None:
    intent = make_intent(tenant_id=unique("tenant"))
    with caplog.at_level(logging.WARNING):
        a2_result, redelivered = _run_zombie_past_a_live_take_over(
            db, alpaca, alpaca_broker, intent, lose_the_answer=lose_the_answer
        )

    doc = reservation(db, intent.tenant_id, intent.client_intent_id)
    [order] = [
        o for o in alpaca.orders.values() if o["client_order_id"] == client_order_id_of(intent)
    ]
    # A2 asked before the zombie's order landed and recorded `halted`; its ack ends the message,
    # so it settles the marked record itself before answering.
    assert (a2_result.outcome, a2_result.recorded_outcome) == (Outcome.DUPLICATE, Outcome.PLACED)
    assert a2_result.broker_order_id == order["id"]
    assert (doc["status"], doc["outcome"], doc.get("broker_order_id")) == (
        "released",
        "placed",
        order["id"],
    )
    assert doc["repair"]["previous_outcome"] == "halted"
    assert doc["repair"]["cancel"] == "requested"
    assert doc.get("unsettled_order") is None
    assert order["status"] == "canceled"
    assert (redelivered.outcome, redelivered.recorded_outcome) == (
        Outcome.DUPLICATE,
        Outcome.PLACED,
    )
    assert redelivered.broker_order_id == order["id"]
    [alert] = events(caplog, "exec.contradiction.repaired")
    assert alert.levelno == logging.ERROR


class CountingLookups(CountingBroker):
    """Counts the lookups by client order id too."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.lookups = 0

    def get_order_by_client_order_id(
        self, tenant_id: str, broker_account_id: str, client_order_id: str
    ) -> BrokerOrder | None:
        self.lookups += 1
        return super().get_order_by_client_order_id(tenant_id, broker_account_id, client_order_id)


def _marked_halted_record_beside_an_open_order(
    db: firestore.Client, alpaca_broker: AlpacaBroker, intent: TradeIntent, clock: FakeClock
) -> BrokerOrder:
    """The state the take-over's ack leaves where it could not settle the marker itself (its
    read failed, its instance died): `halted` with the outlived attempt's marker, and the
    outlived attempt's open order at the broker."""
    db.collection("tenants", intent.tenant_id, "ops").document("execution_kill_switch").set(
        {"enabled": True}
    )
    halted = emulator_service(db, clock, settings=live(), broker=alpaca_broker)
    assert halted.engine.execute_intent(intent).outcome is Outcome.HALTED
    order = alpaca_broker.place_order(
        OrderRequest.from_intent(intent, None, client_order_id_of(intent))
    )
    records = FirestoreReservationRecords(db, policy=FAST_POLICY, retention=timedelta(days=1))
    truth = BrokerTruth(records, alpaca_broker, clock=clock)
    marked = truth.leave_marker(
        intent.tenant_id,
        intent.client_intent_id,
        lease_id="outlived-lease",
        attempt=1,
        broker_order_id=order.broker_order_id,
    )
    assert marked
    return order


def test_a_delivery_that_meets_a_marked_final_record_repairs_it_before_answering(
    db: firestore.Client,
    alpaca: AlpacaSandbox,
    alpaca_broker: AlpacaBroker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    intent = make_intent(tenant_id=unique("tenant"))
    order = _marked_halted_record_beside_an_open_order(db, alpaca_broker, intent, clock)

    with caplog.at_level(logging.WARNING):
        service = emulator_service(db, clock, settings=live(), broker=alpaca_broker)
        redelivered = service.engine.execute_intent(intent)

    doc = reservation(db, intent.tenant_id, intent.client_intent_id)
    assert (redelivered.outcome, redelivered.recorded_outcome) == (
        Outcome.DUPLICATE,
        Outcome.PLACED,
    )
    assert (doc["outcome"], doc["broker_order_id"]) == ("placed", order.broker_order_id)
    assert (doc["repair"]["previous_outcome"], doc["repair"]["cancel"]) == ("halted", "requested")
    assert doc.get("unsettled_order") is None
    assert _status_at(alpaca, order) == "canceled"
    [alert] = events(caplog, "exec.contradiction.repaired")
    assert alert.levelno == logging.ERROR


def test_with_agent_mode_off_a_marked_record_is_acked_and_kept_for_the_reconciler(
    db: firestore.Client,
    alpaca: AlpacaSandbox,
    alpaca_broker: AlpacaBroker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    intent = make_intent(tenant_id=unique("tenant"))
    order = _marked_halted_record_beside_an_open_order(db, alpaca_broker, intent, clock)
    broker = CountingLookups(alpaca_broker)

    with caplog.at_level(logging.WARNING):
        service = emulator_service(
            db, clock, settings=fast_settings(agent_mode=AgentMode.OFF), broker=broker
        )
        redelivered = service.engine.execute_intent(intent)

    doc = reservation(db, intent.tenant_id, intent.client_intent_id)
    assert (redelivered.outcome, redelivered.recorded_outcome) == (
        Outcome.DUPLICATE,
        Outcome.HALTED,
    )
    assert (broker.lookups, broker.place_calls) == (0, 0)
    assert doc["unsettled_order"]["broker_order_id"] == order.broker_order_id
    assert _status_at(alpaca, order) != "canceled"
    [kept] = events(caplog, "exec.intent.unsettled_kept")
    assert kept.levelno == logging.ERROR
