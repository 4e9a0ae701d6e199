"""An `unsettled_order` marker left on a final record is settled by the reconciler, without a
delivery (emulator, real service and adapters, paper broker).

An outlived attempt leaves the marker where a newer attempt held a live lease; where that attempt
then records the same order (`placed`), or no order ever reached the broker, nothing but another
delivery used to clear it. The reconciler's pass now asks the broker for each marked record
whose outlived call can no longer land, settles the record to the answer, clears the marker and
alerts (`exec.contradiction.lingering_marker`).
"""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from google.cloud import firestore

from execution.broker_truth import BrokerTruth
from execution.brokers.paper import PaperBroker
from execution.clock import FakeClock
from execution.firestore.reservation_records import FirestoreReservationRecords
from execution.models import Outcome, TradeIntent
from tests.emulator.test_unknown_fate_firestore import PAST_THE_LAST_CALL, fields
from tests.support.builders import FAST_POLICY, emulator_service, make_intent, reservation


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def leave_marker(
    db: firestore.Client, clock: FakeClock, intent: TradeIntent, broker_order_id: str | None
) -> None:
    """What an outlived attempt's settle leaves where a newer attempt's lease was live."""
    records = FirestoreReservationRecords(db, policy=FAST_POLICY, retention=timedelta(days=1))
    truth = BrokerTruth(records, PaperBroker(db, clock=clock, policy=FAST_POLICY), clock=clock)
    assert truth.leave_marker(
        intent.tenant_id,
        intent.client_intent_id,
        lease_id="outlived-lease",
        attempt=1,
        broker_order_id=broker_order_id,
    )


def dry_run_marked_as_a_lost_answer(db: firestore.Client, clock: FakeClock) -> TradeIntent:
    """A `dry_run` record on which an outlived attempt that lost its broker's answer (no order
    reached the broker) left its marker."""
    intent = make_intent(dry_run=True)
    assert emulator_service(db, clock).engine.execute_intent(intent).outcome is Outcome.DRY_RUN
    leave_marker(db, clock, intent, None)
    return intent


def marker_alerts(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    name = "exec.contradiction.lingering_marker"
    return [fields(r) for r in caplog.records if r.getMessage() == name]


def test_a_marker_left_on_a_placed_record_is_cleared_by_the_reconciler_with_an_alert(
    db: firestore.Client, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    intent = make_intent()
    placed = emulator_service(db, clock).engine.execute_intent(intent)
    assert placed.outcome is Outcome.PLACED
    leave_marker(db, clock, intent, placed.broker_order_id)
    clock.advance(PAST_THE_LAST_CALL.total_seconds())

    with caplog.at_level(logging.INFO):
        report = emulator_service(db, clock).reconciler.reconcile()

    doc = reservation(db, intent.tenant_id, intent.client_intent_id)
    assert doc.get("unsettled_order") is None
    assert (doc["outcome"], doc["broker_order_id"]) == ("placed", placed.broker_order_id)
    assert report.markers_settled == 1
    [alert] = marker_alerts(caplog)
    assert (alert["client_intent_id"], alert["settlement"]) == (intent.client_intent_id, "agreed")


def test_a_marker_of_a_lost_answer_with_no_order_at_the_broker_is_cleared_by_the_reconciler(
    db: firestore.Client, clock: FakeClock
) -> None:
    intent = dry_run_marked_as_a_lost_answer(db, clock)
    clock.advance(PAST_THE_LAST_CALL.total_seconds())

    report = emulator_service(db, clock).reconciler.reconcile()

    doc = reservation(db, intent.tenant_id, intent.client_intent_id)
    assert (doc.get("unsettled_order"), doc["outcome"]) == (None, "dry_run")
    assert report.markers_settled == 1


def test_a_marker_whose_outlived_call_may_still_land_is_left_for_a_later_pass(
    db: firestore.Client, clock: FakeClock
) -> None:
    intent = dry_run_marked_as_a_lost_answer(db, clock)

    report = emulator_service(db, clock).reconciler.reconcile()

    doc = reservation(db, intent.tenant_id, intent.client_intent_id)
    assert doc["unsettled_order"]["broker_order_id"] == "unknown"
    assert report.markers_settled == 0
