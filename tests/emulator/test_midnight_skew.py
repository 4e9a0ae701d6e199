"""The daily order count across UTC midnight, with two instances' clocks apart (emulator).

The real engine and adapters with the paper broker. An order placed while some instance's clock
may be on the other side of midnight must count on both days: an instance still (or already) on
the other day decides on that day's count, and must see it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from google.cloud import firestore

from execution.brokers.paper import PaperBroker
from execution.clock import FakeClock
from execution.models import Outcome
from tests.emulator.test_limits_firestore import account, account_state, execute
from tests.emulator.test_review_limits import DAILY_LIMIT_REACHED, first_order_at, same_account
from tests.support.builders import FAST_POLICY, CountingBroker, fast_settings, make_intent

MIDNIGHT = datetime(2026, 1, 6, tzinfo=UTC)
SKEW = fast_settings().clock_skew_seconds
WITHIN_SKEW = timedelta(seconds=SKEW * 0.8)


@pytest.mark.parametrize(
    ("placing", "peer"),
    [
        (MIDNIGHT + WITHIN_SKEW / 2, MIDNIGHT - WITHIN_SKEW / 2),
        (MIDNIGHT - WITHIN_SKEW / 2, MIDNIGHT + WITHIN_SKEW / 2),
    ],
    ids=["placed-on-the-new-day-peer-still-on-the-old", "placed-on-the-old-day-peer-on-the-new"],
)
def test_an_order_placed_within_the_skew_of_midnight_counts_on_the_day_a_peer_decides_on(
    db: firestore.Client, placing: datetime, peer: datetime
) -> None:
    first = first_order_at(db, placing)
    # Another instance, its clock less than CLOCK_SKEW_SECONDS away on the other side of
    # midnight, decides on its own day's count.
    late = execute(db, FakeClock(peer), first.broker, same_account(first.intent))

    assert first.result.outcome is Outcome.PLACED
    assert (late.outcome, late.reason) == DAILY_LIMIT_REACHED
    assert first.broker.place_calls == 1


def test_an_order_placed_further_than_the_skew_from_midnight_counts_on_its_day_alone(
    db: firestore.Client,
) -> None:
    clock = FakeClock(MIDNIGHT - timedelta(seconds=SKEW + 1))
    broker = CountingBroker(PaperBroker(db, clock=clock, policy=FAST_POLICY))
    first = make_intent()
    account(db, first, max_daily_orders=1)

    placed = execute(db, clock, broker, first)

    assert placed.outcome is Outcome.PLACED
    assert account_state(db, first)["placed_orders"] == {"2026-01-05": 1}
