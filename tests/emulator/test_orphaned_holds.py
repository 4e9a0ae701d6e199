"""A hold whose reservation record is gone (the retention TTL purged it) or is another account's.

The real service, adapters and reconciler on the emulator, with the paper broker. The reconciler
settles such a hold through the broker alone: it asks by the client order id the hold's own
(tenant, account, intent) derive; an order found joins the account's position and daily count,
no order (and no call able to land) ends the hold; either way it alerts
(`exec.contradiction.orphaned_hold`), because a record is missing.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from google.cloud import firestore

from execution.clock import FakeClock
from execution.firestore.paths import reservation_ref
from execution.models import Outcome, TradeIntent
from tests.emulator.test_unknown_fate_firestore import (
    PAST_THE_LAST_CALL,
    account,
    account_state,
    die_after_placing,
    die_before_the_broker,
    fields,
)
from tests.support.builders import emulator_service, make_intent, reservation
from tests.support.positions import positions_of


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def purge_record(db: firestore.Client, intent: TradeIntent) -> None:
    """What the TTL policy on `purge_at` does once the retention passed (or an operator)."""
    reservation_ref(db, intent.tenant_id, intent.client_intent_id).delete()


ORPHAN_ALERT = "exec.contradiction.orphaned_hold"


def orphaned_by_a_death(
    db: firestore.Client, clock: FakeClock, *, placed: bool, max_position_qty: float
) -> tuple[TradeIntent, str | None]:
    """An invocation that took its lease (and, where `placed`, reached the broker) and died;
    then its record was purged. The intent, and the broker's order id (None: no order)."""
    dead = make_intent(qty=5)
    account(db, dead, max_position_qty=max_position_qty, max_daily_orders=5)
    order_id = die_after_placing(db, clock, dead) if placed else None
    if not placed:
        die_before_the_broker(db, clock, dead)
    purge_record(db, dead)
    return dead, order_id


def orphan_alerts(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [fields(r) for r in caplog.records if r.getMessage() == ORPHAN_ALERT]


def test_an_orphaned_hold_whose_order_the_broker_has_joins_the_position_and_alerts(
    db: firestore.Client, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    dead, order_id = orphaned_by_a_death(db, clock, placed=True, max_position_qty=10)
    clock.advance(PAST_THE_LAST_CALL.total_seconds())

    with caplog.at_level(logging.INFO):
        report = emulator_service(db, clock).reconciler.reconcile()
        again = emulator_service(db, clock).reconciler.reconcile()

    state = account_state(db, dead)
    assert state["leases"] == {}
    assert positions_of(state) == {dead.symbol: 5.0}
    assert sum(state["placed_orders"].values()) >= 1
    assert report.holds_placed == 1
    assert not [c for c in report.conflicts if "hold" in c]
    assert again.holds_placed == 0
    [alert] = orphan_alerts(caplog)
    assert (alert["client_intent_id"], alert["settled"], alert["broker_order_id"]) == (
        dead.client_intent_id,
        "placed",
        order_id,
    )


def test_an_orphaned_hold_with_no_order_at_the_broker_ends_and_alerts(
    db: firestore.Client, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    dead, _ = orphaned_by_a_death(db, clock, placed=False, max_position_qty=5)
    second = make_intent(qty=5, broker_account_id=dead.broker_account_id)
    clock.advance(PAST_THE_LAST_CALL.total_seconds())

    with caplog.at_level(logging.INFO):
        report = emulator_service(db, clock).reconciler.reconcile()
    result = emulator_service(db, clock).engine.execute_intent(second)

    assert report.holds_released == 1
    assert not [c for c in report.conflicts if "hold" in c]
    assert result.outcome is Outcome.PLACED
    [alert] = orphan_alerts(caplog)
    assert (alert["client_intent_id"], alert["settled"]) == (dead.client_intent_id, "released")


def test_an_orphaned_hold_is_kept_while_a_call_of_its_lease_may_still_land(
    db: firestore.Client, clock: FakeClock
) -> None:
    dead, _ = orphaned_by_a_death(db, clock, placed=False, max_position_qty=5)
    clock.advance(PAST_THE_LAST_CALL.total_seconds() - 2)

    report = emulator_service(db, clock).reconciler.reconcile()

    assert (report.holds_released, report.holds_placed) == (0, 0)
    assert dead.client_intent_id in str(account_state(db, dead)["leases"])


def test_a_hold_whose_intent_id_now_names_another_accounts_record_is_settled_by_its_own_order(
    db: firestore.Client, clock: FakeClock
) -> None:
    dead, _ = orphaned_by_a_death(db, clock, placed=True, max_position_qty=10)
    # The same intent id, reused by the tenant for another of its accounts once the first
    # record was purged: the record read by the hold's intent id is not the hold's.
    reused = make_intent(
        qty=1, tenant_id=dead.tenant_id, client_intent_id=dead.client_intent_id, dry_run=True
    )
    assert reused.broker_account_id != dead.broker_account_id
    assert emulator_service(db, clock).engine.execute_intent(reused).outcome is Outcome.DRY_RUN
    clock.advance(PAST_THE_LAST_CALL.total_seconds())

    report = emulator_service(db, clock).reconciler.reconcile()

    state = account_state(db, dead)
    assert report.holds_placed == 1
    assert (state["leases"], positions_of(state)) == ({}, {dead.symbol: 5.0})
    # The other account's record is never made to name this account's order.
    other = reservation(db, reused.tenant_id, reused.client_intent_id)
    assert (other["outcome"], other["broker_order_id"]) == ("dry_run", None)


def test_a_hold_whose_record_was_written_again_without_it_is_settled_by_its_order(
    db: firestore.Client, clock: FakeClock
) -> None:
    dead, order_id = orphaned_by_a_death(db, clock, placed=True, max_position_qty=10)
    # The publisher sends the intent again once its record was purged; too old to execute, it
    # is only recorded `stale`, admitted against no limit: the new record names no hold.
    republished = dead.model_copy(update={"created_at": clock() - timedelta(days=1)})
    assert emulator_service(db, clock).engine.execute_intent(republished).outcome is Outcome.STALE
    # Past RECONCILE_LOOKBACK_SECONDS: the broker's listing no longer shows the order.
    clock.advance(timedelta(days=2).total_seconds())

    report = emulator_service(db, clock).reconciler.reconcile()

    state = account_state(db, dead)
    assert (state["leases"], positions_of(state)) == ({}, {dead.symbol: 5.0})
    stored = reservation(db, dead.tenant_id, dead.client_intent_id)
    assert (stored["outcome"], stored["broker_order_id"]) == ("placed", order_id)
    assert report.holds_placed == 1
