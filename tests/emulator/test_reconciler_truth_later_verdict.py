"""An order recorded `placed` that the broker later closes with nothing filled (rejected after
its checks, canceled, expired at the end of its day): the reconciler records the broker's verdict,
gives the order's quantity back to the position, keeps it in the day's count, and says so at ERROR.

Before, the record stayed `placed` and the order counted against the account's position for good,
though it never traded (an order answered dead at once counts against no limit). Now the record
says `rejected` with the order's id (the broker's status in its `error`, `repair` naming
`previous_outcome: placed`), the account's position no longer counts the order, and the orders
counted on its day still do: an order placed is an order placed, and the day it counted on may be
over. An order canceled after part of it filled traded: it stays `placed` and counted whole.

Through `main` on the Firestore emulator with the real `AlpacaBroker` against the loopback Alpaca
sandbox, both on one fake clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from google.cloud import firestore

from execution.models import TradeIntent
from tests.support.builders import client_order_id_of, make_intent, reservation, unique
from tests.support.reconciler_truth import (
    InterruptedRecords,
    World,
    account_counts,
    error_events,
    limit,
    place,
    world,
)


def limited_intent(w: World, **fields: object) -> TradeIntent:
    """An intent on an account of its own that holds a position of 1 and 5 orders a day."""
    intent = make_intent(tenant_id=unique("tenant"), **fields)
    limit(w.db, intent, max_position_qty=1, max_daily_orders=5)
    return intent


@pytest.mark.parametrize("closed", ["canceled", "expired", "rejected"])
def test_a_placed_order_the_broker_closes_unfilled_leaves_the_position_and_stays_in_its_day(
    w: World, caplog: pytest.LogCaptureFixture, closed: str
) -> None:
    intent = limited_intent(w)
    order_id = place(w, intent)
    w.sandbox.close(client_order_id_of(intent), closed)

    w.clock.advance(60)
    with caplog.at_level(logging.ERROR):
        report = w.service.reconciler.reconcile()

    record = reservation(w.db, intent.tenant_id, intent.client_intent_id)
    assert (record["outcome"], record["broker_order_id"]) == ("rejected", order_id)
    assert f"order {order_id} {closed} at the broker after it was placed" in record["error"]
    assert (record["repair"]["previous_outcome"], record["repair"]["found_by"]) == (
        "placed",
        "reconciler",
    )
    assert account_counts(w.db, intent) == {"holds": 0, "position": 0, "placed_orders": 1}
    assert (report.closed_unfilled, report.complete) == (1, True)
    assert "exec.contradiction.closed_unfilled" in error_events(caplog)


def test_the_position_a_dead_order_gave_back_takes_the_next_order(w: World) -> None:
    first = limited_intent(w)
    place(w, first)
    w.sandbox.close(client_order_id_of(first), "canceled")
    w.clock.advance(60)
    w.service.reconciler.reconcile()

    second = make_intent(tenant_id=first.tenant_id, broker_account_id=first.broker_account_id)
    place(w, second)

    assert account_counts(w.db, first) == {"holds": 0, "position": 1, "placed_orders": 2}


@pytest.mark.parametrize(
    ("closed", "filled"),
    [
        pytest.param("canceled", "0.5", id="canceled after half filled"),
        pytest.param("expired", "0.5", id="expired after half filled"),
        pytest.param("filled", "1", id="filled"),
    ],
)
def test_a_placed_order_that_traded_stays_placed_and_counted(
    w: World, closed: str, filled: str
) -> None:
    intent = limited_intent(w)
    order_id = place(w, intent)
    w.sandbox.close(client_order_id_of(intent), closed, filled_qty=filled)

    w.clock.advance(60)
    report = w.service.reconciler.reconcile()

    record = reservation(w.db, intent.tenant_id, intent.client_intent_id)
    assert (record["outcome"], record["broker_order_id"]) == ("placed", order_id)
    assert account_counts(w.db, intent) == {"holds": 0, "position": 1, "placed_orders": 1}
    assert (report.closed_unfilled, report.agreed) == (0, 1)


def test_a_sell_closed_unfilled_gives_back_its_own_side(w: World) -> None:
    intent = limited_intent(w, side="sell")
    place(w, intent)
    w.sandbox.close(client_order_id_of(intent), "canceled")

    w.clock.advance(60)
    w.service.reconciler.reconcile()

    assert account_counts(w.db, intent)["position"] == 0


def test_an_order_submitted_before_the_listings_window_is_judged_through_its_placed_record(
    db: firestore.Client, firestore_project: str, reset_firestore: Callable[[], None]
) -> None:
    # The broker's clock runs 20 s behind ours: the order is submitted at 14:59:40 by its clock,
    # recorded at 15:00:00 by ours; a window starting at 14:59:50 lists no order but reads the
    # record. The broker is then asked for the order by its id.
    with world(db, firestore_project, broker_clock_ahead=-20) as w:
        intent = limited_intent(w)
        order_id = place(w, intent)
        w.sandbox.close(client_order_id_of(intent), "expired")

        w.clock.advance(600)
        report = w.service_with(RECONCILE_LOOKBACK_SECONDS="610").reconciler.reconcile()

        record = reservation(w.db, intent.tenant_id, intent.client_intent_id)
        assert (report.listed, report.placed_records) == (0, 1)
        assert (record["outcome"], record["broker_order_id"]) == ("rejected", order_id)
        assert account_counts(w.db, intent) == {"holds": 0, "position": 0, "placed_orders": 1}
        assert (report.closed_unfilled, report.missing_at_broker) == (1, [])


def test_two_reconcilers_at_once_give_the_position_back_once(w: World) -> None:
    intent = limited_intent(w)
    place(w, intent)
    w.sandbox.close(client_order_id_of(intent), "canceled")
    w.clock.advance(60)
    other_runs: list[int] = []

    def other_reconciler() -> None:
        other_runs.append(w.service.reconciler.reconcile().closed_unfilled)

    records = InterruptedRecords(w.db, other_reconciler)
    report = w.reconciler_over(records).reconcile()

    assert reservation(w.db, intent.tenant_id, intent.client_intent_id)["outcome"] == "rejected"
    assert (other_runs, report.closed_unfilled, records.verdicts_written) == ([1], 0, 0)
    assert account_counts(w.db, intent) == {"holds": 0, "position": 0, "placed_orders": 1}


def test_a_second_run_finds_the_verdict_recorded(w: World) -> None:
    intent = limited_intent(w)
    place(w, intent)
    w.sandbox.close(client_order_id_of(intent), "rejected")
    w.clock.advance(60)
    w.service.reconciler.reconcile()

    again = w.service.reconciler.reconcile()

    assert (again.closed_unfilled, again.agreed, again.conflicts) == (0, 1, [])
    assert account_counts(w.db, intent)["position"] == 0
