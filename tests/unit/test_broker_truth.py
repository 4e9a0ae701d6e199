"""`BrokerTruth.settle`: a record is brought to the order the broker holds, or the disagreement is
reported; an order the record forbade is cancelled first, once."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from execution.broker_truth import BrokerTruth, Settlement, VersionedRecord
from execution.clock import FakeClock
from execution.models import BrokerOrder, Outcome
from execution.reservations import ReservationRecord, ReservationStatus
from tests.unit.fakes import T0, TTL, InMemoryReservationManager, RecordingBroker, make_record

ORDER = BrokerOrder(
    broker_order_id="order-9",
    client_order_id="ex1-x",
    symbol="AAPL",
    side="buy",
    qty=10,
    status="new",
)


def world(**record: Any) -> tuple[BrokerTruth, InMemoryReservationManager, RecordingBroker]:
    clock = FakeClock(T0 + TTL + timedelta(seconds=1))  # past the seeded lease's expiry
    records = InMemoryReservationManager(clock)
    records.seed(make_record(**record))
    broker = RecordingBroker()
    return BrokerTruth(records, broker, clock=clock), records, broker


def settle(truth: BrokerTruth, order: BrokerOrder = ORDER) -> Settlement:
    seeded = make_record()
    return truth.settle(seeded.tenant_id, seeded.client_intent_id, order, found_by="test")


def stored(records: InMemoryReservationManager) -> ReservationRecord:
    seeded = make_record()
    return records.records[(seeded.tenant_id, seeded.client_intent_id)]


def released(outcome: Outcome, **fields: Any) -> dict[str, Any]:
    return {"status": ReservationStatus.RELEASED, "outcome": outcome, **fields}


def test_a_record_that_names_the_order_agrees_and_nothing_is_written() -> None:
    truth, records, broker = world(**released(Outcome.PLACED, broker_order_id="order-9"))
    before = stored(records)

    assert settle(truth) is Settlement.AGREED
    assert stored(records) is before
    assert broker.cancelled == []


@pytest.mark.parametrize("outcome", [Outcome.STALE, Outcome.HALTED, Outcome.REJECTED])
def test_an_open_order_the_record_forbade_is_cancelled_and_recorded_placed(
    outcome: Outcome,
) -> None:
    truth, records, broker = world(**released(outcome, error="why"))

    assert settle(truth) is Settlement.REPAIRED

    record = stored(records)
    assert (record.outcome, record.broker_order_id) == (Outcome.PLACED, "order-9")
    assert record.repair is not None
    assert (record.repair["previous_outcome"], record.repair["cancel"]) == (
        outcome.value,
        "requested",
    )
    assert broker.cancelled == ["order-9"]


def test_a_filled_order_the_record_forbade_is_recorded_placed_without_a_cancel() -> None:
    truth, records, broker = world(**released(Outcome.STALE))

    settle(truth, replace(ORDER, status="filled"))

    record = stored(records)
    assert record.repair is not None and record.repair["cancel"] == "not_cancelable: filled"
    assert broker.cancelled == []


def test_a_record_that_ended_retryably_is_recorded_placed_without_a_cancel() -> None:
    truth, records, broker = world(**released(Outcome.EXCEPTION, error="timeout"))

    assert settle(truth) is Settlement.REPAIRED
    assert stored(records).outcome is Outcome.PLACED
    assert broker.cancelled == []


def test_a_lapsed_lease_whose_invocation_died_is_recorded_placed() -> None:
    truth, records, _ = world()  # reserved, expired at T0 + TTL

    assert settle(truth) is Settlement.REPAIRED
    assert stored(records).status is ReservationStatus.RELEASED


def test_a_live_lease_is_left_to_its_attempt() -> None:
    truth, records, _ = world(expires_at=T0 + TTL * 10)

    assert settle(truth) is Settlement.PENDING
    assert stored(records).status is ReservationStatus.RESERVED


def test_a_record_naming_another_order_is_a_conflict_never_overwritten() -> None:
    truth, records, _ = world(**released(Outcome.PLACED, broker_order_id="order-1"))

    assert settle(truth) is Settlement.CONFLICT
    assert stored(records).broker_order_id == "order-1"


def test_an_order_without_a_record_is_a_conflict() -> None:
    truth = BrokerTruth(
        InMemoryReservationManager(FakeClock(T0)), RecordingBroker(), clock=FakeClock(T0)
    )

    assert settle(truth) is Settlement.CONFLICT


class RacingRecords(InMemoryReservationManager):
    """Loses the first repair write to a concurrent writer, as a precondition failure would."""

    lost = 0

    def record_order(self, current: VersionedRecord, *args: Any) -> bool:
        if self.lost == 0:
            self.lost += 1
            return False
        return super().record_order(current, *args)


def test_a_repair_that_loses_a_race_reads_again_and_cancels_only_once() -> None:
    clock = FakeClock(T0 + TTL + timedelta(seconds=1))
    records = RacingRecords(clock)
    records.seed(make_record(**released(Outcome.HALTED)))
    broker = RecordingBroker()

    assert settle(BrokerTruth(records, broker, clock=clock)) is Settlement.REPAIRED
    assert broker.cancelled == ["order-9"]


class StaleAfterFirstRead(InMemoryReservationManager):
    """The first repair write loses to the taker's release of `stale`, as in simulation seed
    55143: the record read first (a lapsed lease) forbade nothing; the one read next does."""

    raced = False

    def record_order(self, current: VersionedRecord, *args: Any) -> bool:
        if not self.raced:
            self.raced = True
            key = (current.record.tenant_id, current.record.client_intent_id)
            self.records[key] = replace(
                current.record, status=ReservationStatus.RELEASED, outcome=Outcome.STALE
            )
            return False
        return super().record_order(current, *args)


def test_a_cancel_is_decided_again_when_a_lost_race_reveals_a_forbidding_outcome() -> None:
    clock = FakeClock(T0 + TTL + timedelta(seconds=1))
    records = StaleAfterFirstRead(clock)
    records.seed(make_record())  # reserved, lapsed: nothing forbids an order yet
    broker = RecordingBroker()

    assert settle(BrokerTruth(records, broker, clock=clock)) is Settlement.REPAIRED
    assert broker.cancelled == ["order-9"]
    assert stored(records).repair is not None
    assert stored(records).repair["cancel"] == "requested"  # type: ignore[index]


def test_a_record_of_another_client_order_id_is_a_conflict_and_is_never_repaired() -> None:
    # The same intent id on another account: its record's client order id is not the order's.
    truth, records, broker = world(**released(Outcome.EXPIRED), client_order_id="ex1-other")
    before = stored(records)

    assert settle(truth) is Settlement.CONFLICT
    assert stored(records) is before
    assert broker.cancelled == []
