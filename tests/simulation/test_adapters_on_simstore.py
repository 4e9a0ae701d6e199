"""The real Firestore adapters on the simulated store leave what they leave on the emulator.

Each scenario runs twice, once per store, from the same clock start, and the tenant's documents
(random ids named, see `documents_of`) must be equal field for field: types and times included.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from execution.brokers.paper import PaperBroker
from execution.clock import FakeClock
from execution.firestore.reservations import FirestoreReservationManager
from execution.firestore.sweeper_store import FirestoreExpiredLeases
from execution.models import OrderRequest, Outcome
from execution.reservations import Acquired, AlreadyExecuted, ReleaseResult, ReservationRequest
from execution.sweeper import Sweeper
from tests.simulation.documents_of import tenant_documents
from tests.simulation.simstore import SimClient
from tests.support.builders import FAST_POLICY, emulator_service, make_intent, unique
from tests.support.positions import position_of

TTL = timedelta(seconds=30)
ACCOUNT = "acct-1"


def request(tenant_id: str, intent_id: str, amount_usd: float = 100.0) -> ReservationRequest:
    return ReservationRequest(
        tenant_id=tenant_id,
        broker_account_id=ACCOUNT,
        client_intent_id=intent_id,
        symbol="AAPL",
        amount_usd=amount_usd,
        payload_hash="hash-1",
        side="buy",
        qty=1.0,
    )


def acquired(result: object) -> Any:
    assert isinstance(result, Acquired), result
    return result.handle


def lifecycle(db: Any, tenant_id: str) -> dict[str, Any]:
    """Acquire, place, release, take over, sweep, re-acquire and count, on `db`."""
    clock = FakeClock()
    manager = FirestoreReservationManager(db, clock=clock, ttl=TTL, policy=FAST_POLICY)
    broker = PaperBroker(db, clock=clock, policy=FAST_POLICY)
    db.collection("tenants", tenant_id, "accounts").document(ACCOUNT).set(
        {"max_inflight_usd": 1000}
    )
    placed = acquired(manager.acquire(request(tenant_id, "placed")))
    order = broker.place_order(
        OrderRequest(
            tenant_id=tenant_id,
            broker_account_id=ACCOUNT,
            client_order_id="coid-placed",
            symbol="AAPL",
            side="buy",
            qty=1,
            order_type="limit",
            limit_price=100.0,
            time_in_force="day",
        )
    )
    placed.release(Outcome.PLACED, broker_order_id=order.broker_order_id)
    taken = acquired(manager.acquire(request(tenant_id, "taken")))
    acquired(manager.acquire(request(tenant_id, "lapsed")))
    failed = acquired(manager.acquire(request(tenant_id, "retried")))
    # The broker's answer was lost: the lease ends, its hold stays until the fate is known.
    failed.release(Outcome.EXCEPTION, error="boom", fate_unknown=True)
    clock.advance(TTL.total_seconds() + 1)
    acquired(manager.acquire(request(tenant_id, "taken"))).release(Outcome.REJECTED)
    # fenced: the newer lease ended the intent
    assert taken.release(Outcome.PLACED) is ReleaseResult.FENCED
    report = Sweeper(FirestoreExpiredLeases(db, policy=FAST_POLICY), clock=clock).sweep()
    acquired(manager.acquire(request(tenant_id, "retried")))
    duplicate = manager.acquire(request(tenant_id, "placed"))
    # The account state counts what was placed (execution/account_state.py).
    state = tenant_documents(db, tenant_id)[f"execution_inflight/{ACCOUNT}"]
    return {
        "documents": tenant_documents(db, tenant_id),
        "sweep": (report.scanned, report.expired, report.skipped, report.errors),
        "duplicate": isinstance(duplicate, AlreadyExecuted),
        "placed_today": sum(state.get("placed_orders", {}).values()),
        "position": position_of(state, "AAPL"),
    }


def engine_run(db: Any, tenant_id: str) -> dict[str, Any]:
    """The whole engine (opening read, acquire, risk, paper broker, release with its ledger)."""
    clock = FakeClock()
    service = emulator_service(db, clock)
    db.collection("tenants", tenant_id, "accounts").document(ACCOUNT).set(
        {"max_inflight_usd": 1000, "max_orders_per_day": 5}
    )
    outcomes = []
    for n, qty in enumerate([1, 2, 3]):
        intent = make_intent(
            tenant_id=tenant_id, broker_account_id=ACCOUNT, client_intent_id=f"i{n}", qty=qty
        )
        outcomes.append(service.engine.execute_intent(intent).outcome)
        outcomes.append(service.engine.execute_intent(intent).outcome)
    return {"outcomes": outcomes, "documents": tenant_documents(db, tenant_id)}


@pytest.mark.emulator
@pytest.mark.parametrize("scenario", [lifecycle, engine_run], ids=["lifecycle", "engine"])
def test_adapters_leave_the_same_documents_on_both_stores(
    db: Any, sim_db: SimClient, scenario: Any
) -> None:
    tenant_id = unique("tenant")

    on_emulator = scenario(db, tenant_id)
    on_simulation = scenario(sim_db, tenant_id)

    assert on_simulation == on_emulator


def test_lifecycle_outcomes_on_the_simulated_store(sim_db: SimClient) -> None:
    result = lifecycle(sim_db, "tenant-s")

    docs = result["documents"]
    states = {
        path.split("/")[1]: (d["status"], d["outcome"], d["attempt"])
        for path, d in docs.items()
        if path.startswith("execution_reservations/")
    }
    assert states == {
        "placed": ("released", "placed", 1),
        "taken": ("released", "rejected", 2),
        "lapsed": ("expired", "expired", 1),
        "retried": ("reserved", None, 2),
    }
    # The lapsed lease's invocation died, maybe inside its broker call: its hold stays (the
    # reconciler settles it); the retried intent's new lease took its earlier hold over.
    assert docs[f"execution_inflight/{ACCOUNT}"]["leases"] == {
        "lease:lapsed#1": {
            "client_intent_id": "lapsed",
            "amount_usd": 100.0,
            "expires_at": docs["execution_reservations/lapsed"]["expires_at"],
            "symbol": "AAPL",
            "side": "buy",
            "qty": 1.0,
        },
        "lease:retried#2": {
            "client_intent_id": "retried",
            "amount_usd": 100.0,
            "expires_at": docs["execution_reservations/retried"]["expires_at"],
            "symbol": "AAPL",
            "side": "buy",
            "qty": 1.0,
        },
    }
    assert result["sweep"] == (1, 1, 0, 0)
    assert (result["duplicate"], result["placed_today"], result["position"]) == (True, 1, 1.0)


def test_the_engine_places_each_intent_once_on_the_simulated_store(sim_db: SimClient) -> None:
    result = engine_run(sim_db, "tenant-e")

    assert result["outcomes"] == [Outcome.PLACED, Outcome.DUPLICATE] * 3
    ledger = sorted(p for p in result["documents"] if p.startswith("ledger_trades/"))
    assert len(ledger) == 3
