"""One invocation's unit of work on the Firestore emulator: what it reads, when, how it writes.

The engine opens a `FirestoreInvocation` per intent: one `get_all` of the account, its in-flight
document and (unless recently read) the quote and kill switches; the reservation created without
a read; the ledger entry riding on the release's commit. These tests pin the round trips, the
atomic ledger write and every path where the release cannot carry it, the redelivery whose
unread create fails, and the freshness bound of the kill switches, with a fake monotonic clock
standing in for the seconds that pass.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from google.cloud import firestore

from execution.accounts import AccountRead
from execution.bootstrap import Service
from execution.brokers.paper import PaperBroker
from execution.clock import FakeClock
from execution.firestore.invocation import FirestoreInvocationStore
from execution.firestore.reservations import (
    BudgetRead,
    FirestoreReservationManager,
    budget_refs,
)
from execution.models import BrokerOrder, OrderRequest, Outcome, TradeIntent
from execution.reservations import (
    Acquired,
    Acquisition,
    AlreadyExecuted,
    NoopHandle,
    ReservationManager,
    ReservationRequest,
)
from execution.risk import RiskDecision, RiskGate
from tests.support.builders import (
    FAST_POLICY,
    CountingBroker,
    client_order_id_of,
    emulator_service,
    fast_settings,
    ledger_entries,
    make_intent,
    reservation,
    unique,
)

TTL = timedelta(seconds=30)


class FakeMonotonic:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RpcCount:
    """Counts the RPCs a client sends, by method, at its GAPIC stub (every adapter's call)."""

    METHODS = ("batch_get_documents", "begin_transaction", "commit", "run_query")

    def __init__(self, db: firestore.Client) -> None:
        self.calls: Counter[str] = Counter()
        api = db._firestore_api
        for name in self.METHODS:
            setattr(api, name, self._counted(name, getattr(api, name)))

    def _counted(self, name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return call(*args, **kwargs)

        return counted


class NoLease:
    """Hands out no Firestore lease, as fail-open does when the store refuses the acquire."""

    def acquire(self, request: ReservationRequest) -> Acquisition:
        return Acquired(NoopHandle(request.client_order_id))


class ReservedIdBroker(CountingBroker):
    """Places real paper orders but reports an order id Firestore refuses as a document id."""

    def place_order(self, order: OrderRequest) -> BrokerOrder:
        placed = super().place_order(order)
        return dataclasses.replace(placed, broker_order_id="__reserved__")


def store_for(
    db: firestore.Client,
    clock: FakeClock,
    monotonic: FakeMonotonic,
    *,
    max_age: float = 1.0,
    wrap: Callable[[ReservationManager], ReservationManager] | None = None,
) -> FirestoreInvocationStore:
    return FirestoreInvocationStore(
        db,
        reservations=FirestoreReservationManager(db, clock=clock, ttl=TTL, policy=FAST_POLICY),
        clock=clock,
        policy=FAST_POLICY,
        shared_read_max_age_seconds=max_age,
        monotonic=monotonic,
        wrap_reservations=wrap,
    )


def service_for(
    db: firestore.Client,
    clock: FakeClock,
    monotonic: FakeMonotonic,
    *,
    max_age: float = 1.0,
    risk: RiskGate | None = None,
    wrap: Callable[[ReservationManager], ReservationManager] | None = None,
    broker: Any = None,
) -> Service:
    store = store_for(db, clock, monotonic, max_age=max_age, wrap=wrap)
    overrides: dict[str, Any] = {"store": store}
    if risk is not None:
        overrides["risk"] = risk
    if broker is not None:
        overrides["broker"] = broker
    return emulator_service(db, clock, settings=fast_settings(), **overrides)


def set_tenant_switch(db: firestore.Client, tenant_id: str, enabled: bool) -> None:
    db.collection("tenants", tenant_id, "ops").document("execution_kill_switch").set(
        {"enabled": enabled}
    )


def update_time(db: firestore.Client, *path: str) -> Any:
    snap = db.document(*path).get()
    assert snap.exists, f"{'/'.join(path)} does not exist"
    return snap.update_time


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def monotonic() -> FakeMonotonic:
    return FakeMonotonic()


def test_an_intent_costs_one_read_and_three_commits(
    counted_db: firestore.Client, clock: FakeClock, monotonic: FakeMonotonic
) -> None:
    service = service_for(counted_db, clock, monotonic)
    rpcs = RpcCount(counted_db)

    first = service.engine.execute_intent(make_intent())
    cold = dict(rpcs.calls)
    rpcs.calls.clear()
    second = service.engine.execute_intent(make_intent())

    assert (first.outcome, second.outcome) == (Outcome.PLACED, Outcome.PLACED)
    # Read, acquire, paper order, release (+ ledger): the quote and switches ride on the read.
    assert cold == {"batch_get_documents": 1, "commit": 3}
    assert dict(rpcs.calls) == {"batch_get_documents": 1, "commit": 3}


def test_the_ledger_entry_lands_in_the_same_commit_as_the_placed_record(
    db: firestore.Client, clock: FakeClock, monotonic: FakeMonotonic
) -> None:
    service = service_for(db, clock, monotonic)
    intent = make_intent()

    result = service.engine.execute_intent(intent)

    assert result.broker_order_id is not None
    released = update_time(
        db, "tenants", intent.tenant_id, "execution_reservations", intent.client_intent_id
    )
    ledger = update_time(db, "tenants", intent.tenant_id, "ledger_trades", result.broker_order_id)
    assert reservation(db, intent.tenant_id, intent.client_intent_id)["outcome"] == "placed"
    assert ledger == released  # one batch: one commit time


def test_a_fenced_release_leaves_the_ledger_entry_to_flush(
    db: firestore.Client, clock: FakeClock, monotonic: FakeMonotonic
) -> None:
    store = store_for(db, clock, monotonic)
    intent = make_intent()
    invocation = store.open(intent)
    acquisition = invocation.reservations.acquire(request_for(intent))
    assert isinstance(acquisition, Acquired)
    clock.advance(TTL.total_seconds() + 1)  # the lease lapses; a redelivery takes over
    newer = FirestoreReservationManager(db, clock=clock, ttl=TTL, policy=FAST_POLICY)
    taken = newer.acquire(request_for(intent))
    assert isinstance(taken, Acquired)
    order = paper_order(db, clock, intent)

    invocation.ledger.record_trade(intent, order)
    acquisition.handle.release(Outcome.PLACED, broker_order_id=order.broker_order_id)
    before_flush = ledger_entries(db, intent.tenant_id, intent.client_intent_id)
    invocation.flush()

    assert before_flush == []
    assert ledger_entries(db, intent.tenant_id, intent.client_intent_id) == [order.broker_order_id]
    doc = reservation(db, intent.tenant_id, intent.client_intent_id)
    assert (doc["status"], doc["lease_id"]) == ("reserved", taken.handle.lease_id)


def test_with_no_lease_to_release_the_ledger_entry_is_written_on_its_own(
    db: firestore.Client, clock: FakeClock, monotonic: FakeMonotonic
) -> None:
    service = service_for(db, clock, monotonic, wrap=lambda _: NoLease())
    intent = make_intent()

    result = service.engine.execute_intent(intent)

    assert result.outcome is Outcome.PLACED
    assert ledger_entries(db, intent.tenant_id, intent.client_intent_id) == [result.broker_order_id]


def test_a_ledger_entry_the_store_refuses_never_costs_the_release(
    db: firestore.Client,
    clock: FakeClock,
    monotonic: FakeMonotonic,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    broker = ReservedIdBroker(PaperBroker(db, clock=clock, policy=FAST_POLICY))
    service = service_for(db, clock, monotonic, broker=broker)
    intent = make_intent()

    result = service.engine.execute_intent(intent)

    doc = reservation(db, intent.tenant_id, intent.client_intent_id)
    events = [getattr(record, "event", None) for record in caplog.records]
    assert result.outcome is Outcome.PLACED  # acked: not an unrecorded outcome retried forever
    assert (doc["status"], doc["outcome"]) == ("released", "placed")
    assert "exec.reservation.riders_refused" in events
    assert "exec.ledger_write_failed" in events
    assert ledger_entries(db, intent.tenant_id, intent.client_intent_id) == []


def test_a_kill_switch_flipped_on_halts_every_intent_opened_after_the_bound(
    db: firestore.Client, clock: FakeClock, monotonic: FakeMonotonic
) -> None:
    tenant = unique("tenant")
    service = service_for(db, clock, monotonic, max_age=1.0)
    set_tenant_switch(db, tenant, False)
    before = service.engine.execute_intent(make_intent(tenant_id=tenant))
    set_tenant_switch(db, tenant, True)

    monotonic.advance(0.5)
    within = service.engine.execute_intent(make_intent(tenant_id=tenant))
    monotonic.advance(0.6)
    after = service.engine.execute_intent(make_intent(tenant_id=tenant))

    assert before.outcome is Outcome.PLACED
    # Documented: the switch read is reused for up to the bound (1 s), then read again.
    assert within.outcome is Outcome.PLACED
    assert (after.outcome, after.reason) == (Outcome.HALTED, "kill_switch_tenant")


def test_with_a_zero_bound_the_next_intent_sees_the_switch(
    db: firestore.Client, clock: FakeClock, monotonic: FakeMonotonic
) -> None:
    tenant = unique("tenant")
    service = service_for(db, clock, monotonic, max_age=0.0)
    set_tenant_switch(db, tenant, False)
    before = service.engine.execute_intent(make_intent(tenant_id=tenant))
    set_tenant_switch(db, tenant, True)

    after = service.engine.execute_intent(make_intent(tenant_id=tenant))

    assert before.outcome is Outcome.PLACED
    assert (after.outcome, after.reason) == (Outcome.HALTED, "kill_switch_tenant")


@pytest.mark.parametrize(
    ("risk_seconds", "outcome"), [(0.5, Outcome.PLACED), (1.5, Outcome.HALTED)]
)
def test_the_authority_reads_the_switches_again_once_the_opening_read_is_too_old(
    db: firestore.Client,
    clock: FakeClock,
    monotonic: FakeMonotonic,
    risk_seconds: float,
    outcome: Outcome,
) -> None:
    tenant = unique("tenant")
    set_tenant_switch(db, tenant, False)
    flip_during_risk = SwitchFlippingRisk(db, tenant, monotonic, risk_seconds)
    service = service_for(db, clock, monotonic, max_age=1.0, risk=flip_during_risk)

    result = service.engine.execute_intent(make_intent(tenant_id=tenant))

    # Opened with the switch off; it is switched on while risk runs. Within the bound the
    # opening read decides; past it, the authority reads the switch again and halts.
    assert result.outcome is outcome


def test_a_market_order_in_shares_is_sized_from_the_quote_the_invocation_read(
    db: firestore.Client, clock: FakeClock, monotonic: FakeMonotonic
) -> None:
    symbol = unique("SYM").upper().replace("-", "")
    db.collection("market_quotes").document(symbol).set({"bid": 49.99, "ask": 50.0, "ts": clock()})
    service = service_for(db, clock, monotonic)
    intent = make_intent(symbol=symbol, order_type="market", limit_price=None, qty=3)

    result = service.engine.execute_intent(intent)

    assert result.outcome is Outcome.PLACED
    assert reservation(db, intent.tenant_id, intent.client_intent_id)["amount_usd"] == 150.0


class SwitchFlippingRisk:
    """Allows every intent; meanwhile the tenant's switch goes on and `seconds` pass."""

    def __init__(
        self, db: firestore.Client, tenant_id: str, monotonic: FakeMonotonic, seconds: float
    ) -> None:
        self._db = db
        self._tenant_id = tenant_id
        self._monotonic = monotonic
        self._seconds = seconds

    def validate(
        self, intent: TradeIntent, amount_usd: float, account: AccountRead
    ) -> RiskDecision:
        set_tenant_switch(self._db, self._tenant_id, True)
        self._monotonic.advance(self._seconds)
        return RiskDecision(True)


def request_for(intent: TradeIntent) -> ReservationRequest:
    return ReservationRequest(
        tenant_id=intent.tenant_id,
        broker_account_id=intent.broker_account_id,
        client_intent_id=intent.client_intent_id,
        symbol=intent.symbol,
        amount_usd=100.0,
        payload_hash=intent.payload_hash(),
    )


def paper_order(db: firestore.Client, clock: FakeClock, intent: TradeIntent) -> BrokerOrder:
    broker = PaperBroker(db, clock=clock, policy=FAST_POLICY)
    return broker.place_order(OrderRequest.from_intent(intent, None, client_order_id_of(intent)))


def test_an_acquire_refuses_a_budget_read_of_another_account_and_writes_nothing(
    db: firestore.Client, clock: FakeClock
) -> None:
    manager = FirestoreReservationManager(db, clock=clock, ttl=TTL, policy=FAST_POLICY)
    read_for, asked_for = make_intent(), make_intent()
    refs = budget_refs(db, read_for.tenant_id, read_for.broker_account_id)
    snaps = {snap.reference.path: snap for snap in db.get_all(list(refs))}

    with pytest.raises(ValueError, match="budget_read holds"):
        manager.acquire(
            request_for(asked_for), budget_read=BudgetRead(*(snaps[ref.path] for ref in refs))
        )

    doc = db.collection("tenants", asked_for.tenant_id, "execution_reservations").document(
        asked_for.client_intent_id
    )
    assert not doc.get().exists


@pytest.mark.parametrize("max_attempts", [1, 2])
def test_a_redelivery_after_the_create_without_a_read_fails_reads_and_answers(
    db: firestore.Client, clock: FakeClock, monotonic: FakeMonotonic, max_attempts: int
) -> None:
    manager = FirestoreReservationManager(
        db, clock=clock, ttl=TTL, policy=FAST_POLICY, max_attempts=max_attempts
    )
    store = FirestoreInvocationStore(
        db, reservations=manager, clock=clock, policy=FAST_POLICY, monotonic=monotonic
    )
    intent = make_intent()
    first = store.open(intent).reservations.acquire(request_for(intent))
    assert isinstance(first, Acquired)
    first.handle.release(Outcome.PLACED, broker_order_id="order-1")

    # Even with one attempt allowed, the create that found the document is not a lost race.
    again = store.open(intent).reservations.acquire(request_for(intent))

    assert isinstance(again, AlreadyExecuted)
    assert (again.record.outcome, again.record.broker_order_id) == (Outcome.PLACED, "order-1")


def test_a_duplicate_on_an_account_whose_budget_is_full_is_answered_not_told_to_wait(
    db: firestore.Client, clock: FakeClock, monotonic: FakeMonotonic
) -> None:
    store = store_for(db, clock, monotonic)
    account_id = unique("acct")
    placed, holding = (make_intent(broker_account_id=account_id) for _ in range(2))
    db.collection("tenants", placed.tenant_id, "accounts").document(account_id).set(
        {"max_inflight_usd": 150.0}
    )
    first = store.open(placed).reservations.acquire(request_for(placed))  # 100 of 150
    assert isinstance(first, Acquired)
    first.handle.release(Outcome.PLACED, broker_order_id="order-1")
    held = store.open(holding).reservations.acquire(request_for(holding))  # 100 of 150, held
    assert isinstance(held, Acquired)

    again = store.open(placed).reservations.acquire(request_for(placed))

    assert isinstance(again, AlreadyExecuted)
    assert again.record.outcome is Outcome.PLACED
