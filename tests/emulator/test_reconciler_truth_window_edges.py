"""The reconciler's windows, at their edges: nothing is missed at a window's start, nothing is
concluded from what a listing did not show, and no broker order ends a run.

The reconciler lists the broker's orders submitted after `since` (now less
RECONCILE_LOOKBACK_SECONDS, by the broker's clock) and reads the records released `placed` after
`since` (by ours). Attacks:
- an order of unknown fate submitted before the listing's window, on an account without limits
  (no hold asks for it): it was missed and its record stayed `exception` for good; now every
  record of unknown fate is read, whatever its age, and the broker asked by client order id;
- a record released before the records' window whose order is in the listing (the broker's clock
  ahead of ours): settled through the listing (held);
- a listing longer than a page (Alpaca pages by time): every order settled (held); a page that
  cannot be paged past, or that fails: the run is incomplete and nothing is concluded (held);
- broker orders carrying our prefix whose ids name no valid document (`ex1-1-t-1-a-x/y`, `__x__`,
  `..`): the run ended in a ValueError, or every later run was incomplete (the `missing_at_broker`
  check skipped for a day); now each is reported as an order no record knows, and the run goes on.

Through `main` on the Firestore emulator with the real `AlpacaBroker` against the loopback Alpaca
sandbox, both on one fake clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx
import pytest
from google.cloud import firestore

from devtools.alpaca_sandbox import KEY_ID, SECRET_KEY, drop_after_accept, no_fault, status
from execution.errors import RetryableError
from execution.models import OrderRequest, TradeIntent
from tests.support.builders import client_order_id_of, make_intent, reservation, unique
from tests.support.reconciler_truth import (
    World,
    deliver,
    error_events,
    limit,
    place,
    world,
)


def halted_with_an_order_behind_its_back(w: World) -> tuple[TradeIntent, str]:
    """An intent recorded `halted` whose order the broker holds anyway (an outlived attempt's)."""
    intent = make_intent(tenant_id=unique("tenant"))
    w.db.collection("tenants", intent.tenant_id, "ops").document("execution_kill_switch").set(
        {"enabled": True}
    )
    deliver(w.service, intent, unique("m"), w.clock())
    assert reservation(w.db, intent.tenant_id, intent.client_intent_id)["outcome"] == "halted"
    late = OrderRequest.from_intent(intent, None, client_order_id_of(intent))
    return intent, w.broker.place_order(late).broker_order_id  # an outlived attempt's call


@pytest.mark.parametrize("limited", [False, True], ids=["without limits", "limited account"])
def test_an_order_of_unknown_fate_submitted_before_the_listings_window_is_recorded_placed(
    w: World, limited: bool
) -> None:
    intent = make_intent(tenant_id=unique("tenant"))
    if limited:
        limit(w.db, intent, max_position_qty=5)
    w.sandbox.inject("POST", drop_after_accept())  # the order is taken, its answer lost
    with pytest.raises(RetryableError):
        deliver(w.service, intent, unique("m"), w.clock())
    [order] = w.sandbox.wait_for_orders(1).values()

    w.clock.advance(3600)  # no redelivery came; the order is older than a 600 s window
    report = w.service_with(RECONCILE_LOOKBACK_SECONDS="600").reconciler.reconcile()

    record = reservation(w.db, intent.tenant_id, intent.client_intent_id)
    assert report.listed == 0
    assert (record["outcome"], record["broker_order_id"]) == ("placed", order["id"])


def test_a_record_released_before_the_records_window_whose_order_is_listed_agrees(
    db: firestore.Client, firestore_project: str, reset_firestore: Callable[[], None]
) -> None:
    # The broker's clock runs 20 s ahead: the order is submitted at 15:00:20 by its clock and
    # recorded at 15:00:00 by ours; a window from 15:00:10 lists the order but not the record.
    with world(db, firestore_project, broker_clock_ahead=20) as w:
        intent = make_intent(tenant_id=unique("tenant"))
        order_id = place(w, intent)

        w.clock.advance(600)
        report = w.service_with(RECONCILE_LOOKBACK_SECONDS="590").reconciler.reconcile()

        assert (report.listed, report.placed_records, report.agreed) == (1, 0, 1)
        assert (report.conflicts, report.missing_at_broker, report.complete) == ([], [], True)
        assert reservation(w.db, intent.tenant_id, intent.client_intent_id)["broker_order_id"] == (
            order_id
        )


def test_a_listing_of_many_pages_settles_every_order(
    db: firestore.Client, firestore_project: str, reset_firestore: Callable[[], None]
) -> None:
    with world(db, firestore_project, page_size=2) as w:
        for _ in range(5):
            place(w, make_intent(tenant_id=unique("tenant")))
            w.clock.advance(1)
        halted, order_id = halted_with_an_order_behind_its_back(w)  # on the last page

        w.clock.advance(60)
        report = w.service.reconciler.reconcile()

        record = reservation(w.db, halted.tenant_id, halted.client_intent_id)
        assert (report.listed, report.agreed, report.repaired) == (6, 5, 1)
        assert (record["outcome"], record["broker_order_id"]) == ("placed", order_id)
        assert (report.placed_records, report.missing_at_broker, report.complete) == (6, [], True)


def test_a_listing_that_fails_on_a_later_page_concludes_nothing(
    db: firestore.Client, firestore_project: str, reset_firestore: Callable[[], None]
) -> None:
    with world(db, firestore_project, page_size=2) as w:
        for _ in range(5):
            place(w, make_intent(tenant_id=unique("tenant")))
            w.clock.advance(1)

        w.sandbox.inject("GET", no_fault(), status(500, "internal error"))
        report = w.service.reconciler.reconcile()

        assert (report.listed, report.complete) == (2, False)
        assert (report.placed_records, report.missing_at_broker) == (0, [])


def test_a_page_of_orders_sharing_one_time_concludes_nothing(
    db: firestore.Client, firestore_project: str, reset_firestore: Callable[[], None]
) -> None:
    with world(db, firestore_project, page_size=2) as w:  # the clock stands still: one time
        for _ in range(3):
            place(w, make_intent(tenant_id=unique("tenant")))

        report = w.service.reconciler.reconcile()

        assert (report.listed, report.complete) == (2, False)
        assert (report.placed_records, report.missing_at_broker) == (0, [])


FOREIGN_IDS_WITH_OUR_PREFIX = [
    "ex1-1-t-1-a-x/y",  # an intent id with a slash: another document's path
    "ex1-3-a/b-1-c-d",  # a tenant id with a slash
    "ex1-1-t-1-a-__x__",  # Firestore's reserved form
    "ex1-1-t-1-a-..",
    "ex1-1-t-1-a-",  # no intent id
    "ex1-99-t-1-a-b",  # lengths that do not add up
    "ex1h-not-a-sha256",
]


def test_broker_orders_with_our_prefix_naming_no_valid_ids_are_reported_and_end_nothing(
    w: World, caplog: pytest.LogCaptureFixture
) -> None:
    with httpx.Client(
        base_url=w.sandbox.base_url,
        headers={"APCA-API-KEY-ID": KEY_ID, "APCA-API-SECRET-KEY": SECRET_KEY},
    ) as foreign:  # another system trading on the same broker account
        for client_order_id in FOREIGN_IDS_WITH_OUR_PREFIX:
            answer = foreign.post(
                "/v2/orders",
                json={
                    "symbol": "AAPL",
                    "side": "buy",
                    "type": "market",
                    "time_in_force": "day",
                    "qty": "1",
                    "client_order_id": client_order_id,
                },
            )
            assert answer.status_code == 200, answer.text
    ours = make_intent(tenant_id=unique("tenant"))
    place(w, ours)

    w.clock.advance(60)
    with caplog.at_level(logging.ERROR):
        report = w.service.reconciler.reconcile()

    assert (report.listed, report.agreed, report.complete) == (8, 1, True)
    assert len(report.conflicts) == len(FOREIGN_IDS_WITH_OUR_PREFIX)
    for client_order_id in FOREIGN_IDS_WITH_OUR_PREFIX:
        assert any(client_order_id in line for line in report.conflicts), client_order_id
    assert report.placed_records == 1
    assert error_events(caplog).count("exec.contradiction.unrecorded_order") == len(
        FOREIGN_IDS_WITH_OUR_PREFIX
    )
