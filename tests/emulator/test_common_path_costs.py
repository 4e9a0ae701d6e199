"""What the common path reads and leaves behind, on the Firestore emulator through the real engine.

A duplicate delivery (Pub/Sub delivers at least once) answers from the recorded reservation: it
reads the account and its state when the invocation opens, and then the reservation alone, never
the account and its state a second time; so does a redelivery that meets another invocation's
live lease. And an account's state keeps only today's orders-placed
count and yesterday's (for an instance whose clock is still on it): an account without limits
has no admission to prune the older days, so its placed releases do, or the map would grow by a
key every trading day for as long as the account trades.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from google.cloud import firestore

from execution.brokers.paper import PaperBroker
from execution.clock import FakeClock
from execution.errors import ReservationInFlightError
from execution.firestore.paths import account_path, inflight_path, inflight_ref
from execution.models import Outcome, TradeIntent
from tests.support.builders import (
    FAST_POLICY,
    PausedInsideTheCall,
    emulator_service,
    make_intent,
    unique,
)
from tests.support.positions import positions_of

LIMITS: dict[str, dict[str, Any]] = {
    "no limits": {},
    "a budget": {"max_inflight_usd": 1_000_000.0},
    "every limit": {
        "max_inflight_usd": 1_000_000.0,
        "max_daily_orders": 1000,
        "max_position_qty": 1_000_000.0,
    },
}


class DocumentReads:
    """Counts the documents a client reads, by path, at its GAPIC stub (every `get`/`get_all`)."""

    def __init__(self, db: firestore.Client) -> None:
        self.paths: Counter[str] = Counter()
        api = db._firestore_api
        api.batch_get_documents = self._counted(api.batch_get_documents)

    def _counted(self, call: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, request: Any = None, **kwargs: Any) -> Any:
            for name in (request or {}).get("documents", []):
                self.paths[name.split("/documents/", 1)[1]] += 1
            return call(*args, request=request, **kwargs)

        return counted


def set_account(
    db: firestore.Client, tenant_id: str, account_id: str, limits: dict[str, Any]
) -> None:
    if limits:
        db.collection("tenants", tenant_id, "accounts").document(account_id).set(limits)


def intent_reads(paths: Counter[str], intent: TradeIntent) -> dict[str, int]:
    """The reads of the intent's tenant's own documents (the shared ops documents left out)."""
    return {
        path: count
        for path, count in paths.items()
        if path.startswith(f"tenants/{intent.tenant_id}/") and "/ops/" not in path
    }


def read_once_each(intent: TradeIntent) -> dict[str, int]:
    """The account, its state and the intent's reservation, each read once."""
    return {
        account_path(intent.tenant_id, intent.broker_account_id): 1,
        inflight_path(intent.tenant_id, intent.broker_account_id): 1,
        f"tenants/{intent.tenant_id}/execution_reservations/{intent.client_intent_id}": 1,
    }


@pytest.mark.parametrize("limits", LIMITS.values(), ids=LIMITS.keys())
def test_a_duplicate_delivery_reads_its_account_state_and_reservation_once_each(
    counted_db: firestore.Client, limits: dict[str, Any]
) -> None:
    clock = FakeClock()
    service = emulator_service(counted_db, clock)
    intent = make_intent(broker_account_id=unique("acct"))
    set_account(counted_db, intent.tenant_id, intent.broker_account_id, limits)
    assert service.engine.execute_intent(intent).outcome is Outcome.PLACED
    reads = DocumentReads(counted_db)

    again = service.engine.execute_intent(intent)

    assert (again.outcome, again.recorded_outcome) == (Outcome.DUPLICATE, Outcome.PLACED)
    assert intent_reads(reads.paths, intent) == read_once_each(intent)


@pytest.mark.parametrize("limits", LIMITS.values(), ids=LIMITS.keys())
def test_a_redelivery_meeting_a_live_lease_elsewhere_is_answered_from_the_reservation_alone(
    counted_db: firestore.Client, limits: dict[str, Any]
) -> None:
    # The reservation-only read decides every answer a reservation alone gives: here, another
    # invocation's live lease (it is inside its broker call). The redelivery must neither take
    # the intent over nor reach the broker, and it reads no document twice.
    clock = FakeClock()
    intent = make_intent(broker_account_id=unique("acct"))
    set_account(counted_db, intent.tenant_id, intent.broker_account_id, limits)
    read_by_redelivery: list[Counter[str]] = []

    def redelivered() -> None:
        reads = DocumentReads(counted_db)
        with pytest.raises(ReservationInFlightError):
            service.engine.execute_intent(intent)
        read_by_redelivery.append(Counter(reads.paths))

    paper = PaperBroker(counted_db, clock=clock, policy=FAST_POLICY)
    broker = PausedInsideTheCall(paper, redelivered)
    service = emulator_service(counted_db, clock, broker=broker)

    assert service.engine.execute_intent(intent).outcome is Outcome.PLACED

    assert len(read_by_redelivery) == 1 and broker.place_calls == 1
    assert intent_reads(read_by_redelivery[0], intent) == read_once_each(intent)


@pytest.mark.parametrize("limits", LIMITS.values(), ids=LIMITS.keys())
def test_a_placed_order_leaves_only_todays_and_yesterdays_counts_and_every_position(
    db: firestore.Client, limits: dict[str, Any]
) -> None:
    clock = FakeClock(datetime(2026, 12, 1, 15, 0, tzinfo=UTC))
    service = emulator_service(db, clock)
    intent = make_intent(broker_account_id=unique("acct"), qty=2)
    set_account(db, intent.tenant_id, intent.broker_account_id, limits)
    state = inflight_ref(db, intent.tenant_id, intent.broker_account_id)
    state.set(
        {
            "positions": {"AAPL": 5.0, "MSFT": -3.0},
            "placed_orders": {"2026-11-27": 3, "2026-11-30": 7, "2026-12-01": 2},
        }
    )

    assert service.engine.execute_intent(intent).outcome is Outcome.PLACED

    stored = state.get().to_dict() or {}
    assert stored["placed_orders"] == {"2026-11-30": 7, "2026-12-01": 3}
    assert positions_of(stored) == {"AAPL": 7.0, "MSFT": -3.0}


def test_an_instance_whose_clock_is_still_on_yesterday_sees_yesterdays_count(
    db: firestore.Client,
) -> None:
    # Two instances' clocks differ by up to CLOCK_SKEW_SECONDS: at midnight one is on the new
    # day while the other still admits intents on the old one. The old day's count must survive
    # the new day's first writes, or the late instance finds it empty and admits past the limit.
    ahead = FakeClock(datetime(2026, 12, 2, 0, 0, 2, tzinfo=UTC))
    behind = FakeClock(datetime(2026, 12, 1, 23, 59, 58, tzinfo=UTC))
    account_id = unique("acct")
    first, late = (make_intent(broker_account_id=account_id) for _ in range(2))
    set_account(db, first.tenant_id, account_id, {"max_daily_orders": 1})
    inflight_ref(db, first.tenant_id, account_id).set({"placed_orders": {"2026-12-01": 1}})

    assert emulator_service(db, ahead).engine.execute_intent(first).outcome is Outcome.PLACED
    result = emulator_service(db, behind).engine.execute_intent(late)

    assert result.outcome is Outcome.REJECTED
    assert (result.reason or "").startswith("max_daily_orders_reached")
