"""A burst of intents on one account with every limit set: no limit exceeded at any instant.

Forty intents, each run by its own thread through the real engine on the emulator and redelivered
(as Pub/Sub would) while it answers retryable, fire at one account that sets an in-flight budget,
an order notional cap, a daily order limit and a position limit. The paper broker holds every
order call for a moment, so many intents are in flight at once. A `LimitsMonitor` thread reads a
consistent snapshot of the database (one Firestore `read_time`) continuously, as the chaos monitor
does for the budget, and records every snapshot in which a limit is exceeded: by the broker's own
order book, by the reservations (placed plus in flight), and by the account-state document the
acquire decides on.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from execution.brokers.paper import PAPER_ORDERS, PaperBroker
from execution.clock import Clock, system_clock
from execution.engine import ExecutionEngine
from execution.errors import RetryableError
from execution.firestore.reservations import inflight_ref
from execution.firestore.support import CallPolicy
from execution.models import BrokerOrder, ExecutionResult, OrderRequest, Outcome, TradeIntent
from tests.support.builders import CountingBroker, emulator_service, fast_settings, make_intent
from tests.support.positions import position_of

_EPSILON = 1e-6
LIMITS = {
    "max_inflight_usd": 120.0,
    "max_order_notional_usd": 45.0,
    "max_daily_orders": 20,
    "max_position_qty": 8.0,
}

# Patient store deadlines: on a busy shared machine a 2 s deadline turns slow answers into retries.
SETTINGS = fast_settings(firestore_timeout_seconds=10.0)
PATIENT_POLICY = CallPolicy(timeout_seconds=10.0)


@dataclass(frozen=True)
class Account:
    tenant_id: str
    account_id: str


class LimitsMonitor(threading.Thread):
    """Checks every limit on consistent snapshots of one account until stopped."""

    def __init__(self, db: firestore.Client, account: Account, *, lag: float = 0.3) -> None:
        super().__init__(name="limits-monitor", daemon=True)
        self.db = db
        self.account = account
        self.lag = lag
        self.snapshots = 0
        self.failed_reads = 0
        self.breaches: list[str] = []
        self.peaks: Counter[str] = Counter()
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self.poll(system_clock() - timedelta(seconds=self.lag))
            except Exception:  # a snapshot older than the documents, or a busy emulator
                self.failed_reads += 1
            self._halt.wait(0.05)

    def poll(self, at: datetime) -> None:
        """Check the account as the database was at `at`."""
        tenant = self.db.collection("tenants").document(self.account.tenant_id)
        mine = FieldFilter("broker_account_id", "==", self.account.account_id)
        read = {"retry": None, "timeout": 5, "read_time": at}
        reservations = [
            snap.to_dict() or {}
            for snap in tenant.collection("execution_reservations")
            .where(filter=mine)
            .stream(**read)
        ]
        orders = [
            snap.to_dict() or {}
            for snap in tenant.collection(PAPER_ORDERS).where(filter=mine).stream(**read)
        ]
        state_ref = inflight_ref(self.db, self.account.tenant_id, self.account.account_id)
        [state_snap] = self.db.get_all([state_ref], **read)
        self.snapshots += 1
        self._check_broker(orders)
        self._check_reservations(reservations, at)
        self._check_state(state_snap.to_dict() or {}, at)

    def _check_broker(self, orders: list[dict[str, Any]]) -> None:
        self._bound("broker orders", len(orders), LIMITS["max_daily_orders"])
        self._bound("broker net position", abs(net(orders)), LIMITS["max_position_qty"])

    def _check_reservations(self, docs: list[dict[str, Any]], at: datetime) -> None:
        placed = [d for d in docs if d.get("outcome") == "placed"]
        live = [
            d
            for d in docs
            if d["status"] == "reserved" and d.get("counts_against_budget") and d["expires_at"] > at
        ]
        self._bound("reserved USD", sum(d["amount_usd"] for d in live), LIMITS["max_inflight_usd"])
        self._bound(
            "placed + in-flight orders", len(placed) + len(live), LIMITS["max_daily_orders"]
        )
        self._bound_position("reservations", net(placed), live)

    def _check_state(self, state: dict[str, Any], at: datetime) -> None:
        # A lease past its expiry stops counting at once (the contract), here as at acquire.
        leases = [e for e in (state.get("leases") or {}).values() if e["expires_at"] > at]
        placed_today = sum((state.get("placed_orders") or {}).values())
        self._bound("state USD", sum(e["amount_usd"] for e in leases), LIMITS["max_inflight_usd"])
        self._bound("state orders", placed_today + len(leases), LIMITS["max_daily_orders"])
        held = float(position_of(state, "AAPL"))
        self._bound_position("state", held, leases)

    def _bound_position(self, source: str, placed: float, live: list[dict[str, Any]]) -> None:
        buying = sum(e["qty"] for e in live if e["side"] == "buy")
        selling = sum(e["qty"] for e in live if e["side"] == "sell")
        limit = LIMITS["max_position_qty"]
        self._bound(f"{source} long worst case", placed + buying, limit)
        self._bound(f"{source} short worst case", selling - placed, limit)

    def _bound(self, what: str, value: float, limit: float) -> None:
        self.peaks[what] = max(self.peaks[what], value)
        if value > limit + _EPSILON:
            self.breaches.append(f"{what}: {value:g} > {limit:g}")


def net(entries: list[dict[str, Any]]) -> float:
    return sum(e["qty"] if e["side"] == "buy" else -e["qty"] for e in entries)


class SlowBroker(CountingBroker):
    """Holds each order call for a moment, so the leases of many intents overlap."""

    def place_order(self, order: OrderRequest) -> BrokerOrder:
        time.sleep(0.05)
        return super().place_order(order)


@dataclass
class Deliveries:
    """What the redelivery loop saw: each intent's result, and the retryable answers."""

    results: dict[str, ExecutionResult] = field(default_factory=dict)
    retries: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


def deliver_until_done(
    db: firestore.Client,
    clock: Clock,
    broker: CountingBroker,
    intent: TradeIntent,
    seen: Deliveries,
    start: threading.Barrier,
) -> None:
    """Run `intent` on its own engine (an instance of its own), once every thread is ready."""
    engine = emulator_service(db, clock, settings=SETTINGS, broker=broker).engine
    start.wait()
    redeliver(engine, intent, seen)


def redeliver(engine: ExecutionEngine, intent: TradeIntent, seen: Deliveries) -> None:
    """Run `intent` as Pub/Sub would: again after each retryable answer, with a short backoff."""
    rng = random.Random(intent.client_intent_id)
    for _ in range(400):
        try:
            result = engine.execute_intent(intent)
        except RetryableError as exc:
            with seen.lock:
                seen.retries[type(exc).__name__] += 1
            time.sleep(rng.uniform(0.02, 0.1))
            continue
        with seen.lock:
            seen.results[intent.client_intent_id] = result
        return


def test_forty_concurrent_intents_never_exceed_any_account_limit_at_any_instant(
    db: firestore.Client,
) -> None:
    # The real clock: a lease whose release failed (a busy emulator) lapses, and its redelivery
    # takes over, as in production.
    clock = system_clock
    first = make_intent()
    account = Account(first.tenant_id, first.broker_account_id)
    db.collection("tenants", account.tenant_id, "accounts").document(account.account_id).set(LIMITS)
    rng = random.Random(12)
    intents = [
        make_intent(
            broker_account_id=account.account_id,
            side="buy" if rng.random() < 0.75 else "sell",
            qty=float(rng.randint(1, 5)),
            limit_price=10.0,
        )
        for _ in range(40)
    ]
    broker = SlowBroker(PaperBroker(db, clock=clock, policy=PATIENT_POLICY))
    seen = Deliveries()
    start = threading.Barrier(len(intents))
    monitor = LimitsMonitor(db, account)
    monitor.start()
    threads = [
        threading.Thread(target=deliver_until_done, args=(db, clock, broker, i, seen, start))
        for i in intents
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 100  # a bound against a hang, not a performance assertion
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    time.sleep(monitor.lag + 0.2)  # let the monitor see the end state too
    monitor.stop()

    outcomes = Counter(r.outcome for r in seen.results.values())
    reasons = Counter((r.reason or "").split(":")[0] for r in seen.results.values())
    assert len(seen.results) == len(intents), (outcomes, seen.retries)
    assert monitor.breaches == [], monitor.breaches[:5]
    assert monitor.snapshots > 0, (monitor.snapshots, monitor.failed_reads)
    assert outcomes[Outcome.PLACED] == broker.place_calls <= LIMITS["max_daily_orders"]
    # The limits were reached, not merely respected: each one turned intents away.
    assert reasons["max_order_notional_exceeded"] > 0, reasons
    assert reasons["max_position_exceeded"] > 0, reasons
    assert seen.retries["BudgetWaitError"] + seen.retries["LimitWaitError"] > 0, seen.retries
    print(  # reported by `pytest -s`: how the burst went
        f"outcomes={dict(outcomes)} reasons={dict(reasons)} retries={dict(seen.retries)} "
        f"snapshots={monitor.snapshots} unreadable={monitor.failed_reads} "
        f"peaks={dict(monitor.peaks)}"
    )
