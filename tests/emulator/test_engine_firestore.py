"""The engine on the real Firestore emulator: duplicates, and the store failing at each boundary.

Store outages are injected at the real boundary: the engine's client talks to the emulator through
a TCP proxy that the test cuts (connections reset, new ones refused), as a Firestore outage looks.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from google.cloud import firestore

from execution.brokers.paper import PaperBroker
from execution.clock import FakeClock
from execution.errors import OutcomeUnrecordedError, RetryableError, StoreUnavailableError
from execution.models import BrokerOrder, OrderRequest, Outcome
from tests.support.builders import (
    FAST_POLICY,
    CountingBroker,
    client_at,
    client_order_id_of,
    emulator_service,
    fast_settings,
    ledger_entries,
    make_intent,
    reservation,
)
from tests.support.tcp_proxy import CuttableProxy


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def proxy() -> Iterator[CuttableProxy]:
    cuttable = CuttableProxy(os.environ["FIRESTORE_EMULATOR_HOST"])
    yield cuttable
    cuttable.close()


@pytest.fixture
def proxied_db(proxy: CuttableProxy, db: firestore.Client) -> Iterator[firestore.Client]:
    with client_at(proxy.address, db.project) as client:
        yield client


class CutStoreAfterPlacing:
    """A broker that places the order for real, then the store goes down before release."""

    is_paper = True

    def __init__(self, inner: PaperBroker, proxy: CuttableProxy) -> None:
        self._inner = inner
        self._proxy = proxy

    def place_order(self, order: OrderRequest) -> BrokerOrder:
        placed = self._inner.place_order(order)
        self._proxy.cut()
        return placed

    def get_order_by_client_order_id(
        self, tenant_id: str, broker_account_id: str, client_order_id: str
    ) -> BrokerOrder | None:
        return self._inner.get_order_by_client_order_id(
            tenant_id, broker_account_id, client_order_id
        )

    def cancel_order(self, tenant_id: str, broker_account_id: str, broker_order_id: str) -> None:
        return None


def test_an_intent_is_placed_recorded_and_released(db: firestore.Client, clock: FakeClock) -> None:
    service = emulator_service(db, clock)
    intent = make_intent()

    result = service.engine.execute_intent(intent)

    doc = reservation(db, intent.tenant_id, intent.client_intent_id)
    assert result.outcome is Outcome.PLACED
    assert (doc["status"], doc["outcome"]) == ("released", "placed")
    assert doc["broker_order_id"] == result.broker_order_id
    assert ledger_entries(db, intent.tenant_id, intent.client_intent_id) == [result.broker_order_id]


def test_a_duplicate_after_placed_returns_the_recorded_result_without_a_broker_call(
    db: firestore.Client, clock: FakeClock
) -> None:
    broker = CountingBroker(PaperBroker(db, clock=clock, policy=FAST_POLICY))
    service = emulator_service(db, clock, broker=broker)
    intent = make_intent()
    first = service.engine.execute_intent(intent)

    again = service.engine.execute_intent(intent)

    assert again.outcome is Outcome.DUPLICATE
    assert again.recorded_outcome is Outcome.PLACED
    assert again.broker_order_id == first.broker_order_id
    assert broker.place_calls == 1


def test_store_down_at_acquire_is_retryable_and_reaches_no_broker(
    proxied_db: firestore.Client, proxy: CuttableProxy, db: firestore.Client, clock: FakeClock
) -> None:
    counting = CountingBroker(PaperBroker(db, clock=clock, policy=FAST_POLICY))
    service = emulator_service(proxied_db, clock, broker=counting)
    intent = make_intent()
    proxy.cut()

    with pytest.raises(StoreUnavailableError):
        service.engine.execute_intent(intent)

    assert counting.place_calls == 0
    assert (
        not db.collection("tenants", intent.tenant_id, "execution_reservations")
        .document(intent.client_intent_id)
        .get()
        .exists
    )


def test_store_down_at_release_asks_for_a_redelivery_and_leaves_the_lease_to_lapse(
    proxied_db: firestore.Client, proxy: CuttableProxy, db: firestore.Client, clock: FakeClock
) -> None:
    broker = CutStoreAfterPlacing(PaperBroker(db, clock=clock, policy=FAST_POLICY), proxy)
    service = emulator_service(proxied_db, clock, broker=broker)
    intent = make_intent()

    with pytest.raises(OutcomeUnrecordedError) as raised:
        service.engine.execute_intent(intent)

    doc = reservation(db, intent.tenant_id, intent.client_intent_id)
    assert isinstance(raised.value, RetryableError)
    assert doc["status"] == "reserved"
    assert doc["outcome"] is None


def test_after_a_lost_release_the_redelivery_records_the_order_without_placing_another(
    proxied_db: firestore.Client, proxy: CuttableProxy, db: firestore.Client, clock: FakeClock
) -> None:
    broker = CutStoreAfterPlacing(PaperBroker(db, clock=clock, policy=FAST_POLICY), proxy)
    intent = make_intent()
    with pytest.raises(OutcomeUnrecordedError):
        emulator_service(proxied_db, clock, broker=broker).engine.execute_intent(intent)
    clock.advance(fast_settings().reservation_ttl_seconds + 1)
    counting = CountingBroker(PaperBroker(db, clock=clock, policy=FAST_POLICY))

    second = emulator_service(db, clock, broker=counting).engine.execute_intent(intent)

    doc = reservation(db, intent.tenant_id, intent.client_intent_id)
    paper = (
        db.collection("tenants", intent.tenant_id, "paper_orders")
        .document(client_order_id_of(intent))
        .get()
        .to_dict()
        or {}
    )
    assert second.outcome is Outcome.PLACED
    assert second.broker_order_id == paper["broker_order_id"]
    assert (doc["status"], doc["attempt"]) == ("released", 2)
    assert counting.place_calls == 0
    assert ledger_entries(db, intent.tenant_id, intent.client_intent_id) == [
        paper["broker_order_id"]
    ]


def test_a_risk_rejection_is_recorded_and_released(db: firestore.Client, clock: FakeClock) -> None:
    intent = make_intent(qty=10, limit_price=100.0)
    db.collection("tenants", intent.tenant_id, "accounts").document(intent.broker_account_id).set(
        {"max_order_notional_usd": 500.0}
    )
    service = emulator_service(db, clock)

    result = service.engine.execute_intent(intent)

    doc = reservation(db, intent.tenant_id, intent.client_intent_id)
    assert result.outcome is Outcome.REJECTED
    assert (doc["status"], doc["outcome"]) == ("released", "rejected")
    assert doc["error"].startswith("max_order_notional_exceeded")


def test_a_tenant_kill_switch_halts_without_a_broker_call(
    db: firestore.Client, clock: FakeClock
) -> None:
    intent = make_intent(tenant_id="tenant-halted")
    db.collection("tenants", intent.tenant_id, "ops").document("execution_kill_switch").set(
        {"enabled": True}
    )
    broker = CountingBroker(PaperBroker(db, clock=clock, policy=FAST_POLICY))
    service = emulator_service(db, clock, broker=broker)

    result = service.engine.execute_intent(intent)

    assert result.outcome is Outcome.HALTED
    assert result.reason == "kill_switch_tenant"
    assert broker.place_calls == 0
    assert reservation(db, intent.tenant_id, intent.client_intent_id)["outcome"] == "halted"
