"""A record of unknown fate (`exception`) ends saying what the broker says, once no delivery
comes: the reconciler writes it, and says so at ERROR.

An intent whose broker call lost its answer (the order taken, the connection dropped; or a 503
that may or may not have placed it) is released `exception`: retried, and counted against its
account's limits while its fate is unknown. When Pub/Sub gives up on the message (the dead-letter
topic), no redelivery asks the broker again. Before this, the reconciler ended the hold but left
the record `exception`, which `status` and `intent` cannot tell from a live problem. Now it asks
the broker by client order id, once no call of the intent can land any more:
- the order died at the broker (canceled or expired with nothing filled, or rejected): the
  record says `rejected` with the order's id, as the redelivery would have written it;
- the broker has no order, and no delivery can place one any more (the intent is past
  INTENT_MAX_AGE_SECONDS): the record says `stale`, as the redelivery would have written it;
- while a delivery could still place it, the record stays `exception`: nothing is concluded.

Each runs through `main` on the Firestore emulator with the real `AlpacaBroker` against the
loopback Alpaca sandbox, both on one fake clock.
"""

from __future__ import annotations

import logging

import pytest

from devtools.alpaca_sandbox import drop_after_accept, status
from execution.errors import RetryableError
from execution.models import TradeIntent
from tests.support.builders import make_intent, reservation, unique
from tests.support.reconciler_truth import (
    InterruptedRecords,
    World,
    account_counts,
    deliver,
    error_events,
    limit,
)

NOTHING_COUNTED = {"holds": 0, "position": 0, "placed_orders": 0}
NO_DELIVERY_COMES = 3600.0
"""Seconds after which the test's Pub/Sub has given up: past the lease, its last broker call and
INTENT_MAX_AGE_SECONDS (300 s by default)."""


def an_intent(w: World, *, limited: bool) -> TradeIntent:
    intent = make_intent(tenant_id=unique("tenant"))
    if limited:
        limit(w.db, intent, max_daily_orders=5, max_position_qty=5)
    return intent


def lose_the_answer(w: World, intent: TradeIntent, message_id: str | None = None) -> str:
    """Deliver `intent` once; the sandbox takes its order and drops the connection. The order's
    id."""
    w.sandbox.inject("POST", drop_after_accept())
    with pytest.raises(RetryableError):
        deliver(w.service, intent, message_id or unique("m"), w.clock())
    [order] = w.sandbox.wait_for_orders(1).values()
    return str(order["id"])


def never_reach_the_broker(w: World, intent: TradeIntent, message_id: str | None = None) -> None:
    """Deliver `intent` once; the sandbox answers 503 before taking any order."""
    w.sandbox.inject("POST", status(503, "service unavailable"))
    with pytest.raises(RetryableError):
        deliver(w.service, intent, message_id or unique("m"), w.clock())


WHERE_THE_ORDER_IS = [
    pytest.param(True, "86400", id="limited account, order in the listing"),
    pytest.param(False, "86400", id="account without limits, order in the listing"),
    pytest.param(True, "600", id="limited account, order before the listing's window"),
    pytest.param(False, "600", id="account without limits, order before the listing's window"),
]


@pytest.mark.parametrize(("limited", "lookback"), WHERE_THE_ORDER_IS)
def test_a_lost_answer_whose_order_the_broker_canceled_unfilled_is_recorded_rejected_with_its_id(
    w: World, caplog: pytest.LogCaptureFixture, limited: bool, lookback: str
) -> None:
    intent = an_intent(w, limited=limited)
    order_id = lose_the_answer(w, intent)
    w.broker.cancel_order(intent.tenant_id, intent.broker_account_id, order_id)  # nothing filled

    w.clock.advance(NO_DELIVERY_COMES)
    with caplog.at_level(logging.ERROR):
        report = w.service_with(RECONCILE_LOOKBACK_SECONDS=lookback).reconciler.reconcile()

    record = reservation(w.db, intent.tenant_id, intent.client_intent_id)
    assert (record["outcome"], record["broker_order_id"]) == ("rejected", order_id)
    assert f"order {order_id} canceled at the broker" in record["error"]
    assert (record["repair"]["previous_outcome"], record["repair"]["found_by"]) == (
        "exception",
        "reconciler",
    )
    assert account_counts(w.db, intent) == NOTHING_COUNTED
    assert (report.fates_settled, report.complete) == (1, True)
    assert "exec.contradiction.fate_settled" in error_events(caplog)


@pytest.mark.parametrize("limited", [True, False], ids=["limited account", "without limits"])
def test_an_intent_the_broker_never_got_is_recorded_stale_once_no_delivery_can_place_it(
    w: World, caplog: pytest.LogCaptureFixture, limited: bool
) -> None:
    intent = an_intent(w, limited=limited)
    never_reach_the_broker(w, intent)

    w.clock.advance(NO_DELIVERY_COMES)
    with caplog.at_level(logging.ERROR):
        report = w.service.reconciler.reconcile()

    record = reservation(w.db, intent.tenant_id, intent.client_intent_id)
    assert (record["outcome"], record.get("broker_order_id")) == ("stale", None)
    assert "no order at the broker" in record["error"]
    assert record["repair"]["previous_outcome"] == "exception"
    assert account_counts(w.db, intent) == NOTHING_COUNTED
    assert w.sandbox.orders == {}
    assert report.fates_settled == 1
    assert "exec.contradiction.fate_settled" in error_events(caplog)


def test_an_intent_of_unknown_fate_a_delivery_could_still_place_stays_exception_and_is_placed_later(
    w: World,
) -> None:
    service = w.service_with(INTENT_MAX_AGE_SECONDS="86400")
    intent = an_intent(w, limited=True)
    published_at, message_id = w.clock(), unique("m")
    never_reach_the_broker(w, intent, message_id)

    w.clock.advance(NO_DELIVERY_COMES)  # the message is an hour old: Pub/Sub still redelivers it
    report = service.reconciler.reconcile()
    left = reservation(w.db, intent.tenant_id, intent.client_intent_id)
    deliver(service, intent, message_id, published_at)

    assert (left["outcome"], report.fates_settled) == ("exception", 0)
    assert reservation(w.db, intent.tenant_id, intent.client_intent_id)["outcome"] == "placed"
    assert account_counts(w.db, intent) == {"holds": 0, "position": 1, "placed_orders": 1}


def test_a_lookup_the_broker_does_not_answer_concludes_nothing(w: World) -> None:
    intent = an_intent(w, limited=True)
    never_reach_the_broker(w, intent)

    w.clock.advance(NO_DELIVERY_COMES)
    w.sandbox.inject("GET", *[status(503, "service unavailable")] * 5)  # listing and lookups
    report = w.service.reconciler.reconcile()

    record = reservation(w.db, intent.tenant_id, intent.client_intent_id)
    assert record["outcome"] == "exception"
    assert account_counts(w.db, intent)["holds"] == 1
    assert (report.fates_settled, report.complete) == (0, False)


def test_a_redelivery_meanwhile_records_the_fate_itself_and_the_reconciler_writes_nothing(
    w: World,
) -> None:
    intent = an_intent(w, limited=True)
    published_at, message_id = w.clock(), unique("m")
    order_id = lose_the_answer(w, intent, message_id)
    w.broker.cancel_order(intent.tenant_id, intent.broker_account_id, order_id)
    w.clock.advance(NO_DELIVERY_COMES)

    def redelivery() -> None:  # Pub/Sub's last try, between the reconciler's read and write
        deliver(w.service, intent, message_id, published_at)

    records = InterruptedRecords(w.db, redelivery)
    report = w.reconciler_over(records).reconcile()

    record = reservation(w.db, intent.tenant_id, intent.client_intent_id)
    assert (record["outcome"], record["broker_order_id"]) == ("rejected", order_id)
    assert record.get("repair") is None  # the redelivery's own release, not a repair
    assert records.verdicts_written == 0
    assert account_counts(w.db, intent) == NOTHING_COUNTED
    assert report.fates_settled == 0


def test_two_reconcilers_at_once_write_the_fate_once(w: World) -> None:
    intent = an_intent(w, limited=True)
    never_reach_the_broker(w, intent)
    w.clock.advance(NO_DELIVERY_COMES)
    other_runs: list[int] = []

    def other_reconciler() -> None:
        other_runs.append(w.service.reconciler.reconcile().fates_settled)

    records = InterruptedRecords(w.db, other_reconciler)
    report = w.reconciler_over(records).reconcile()

    record = reservation(w.db, intent.tenant_id, intent.client_intent_id)
    assert record["outcome"] == "stale"
    assert (other_runs, report.fates_settled, records.verdicts_written) == ([1], 0, 0)
    assert account_counts(w.db, intent) == NOTHING_COUNTED
