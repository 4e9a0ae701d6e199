"""The work being measured: intents through the real engine, and the least store work per intent.

`seed` writes what an intent's path reads (accounts, a fresh quote, both kill switches off), so
the engine takes its common path: reserve, route on a live quote, risk on a real account
document, authority, paper order, ledger, release.

`BoundOperation` is the floor any correct implementation pays per intent on the same client:
one transaction that reads the reservation document and creates it, one plain write (the order)
and one update (the release). Nothing else: no account, no quote, no switch, no ledger.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from google.cloud import firestore

from bench.transactional_peer import TransactionalReservationManager
from execution.bootstrap import Service, bootstrap
from execution.clock import system_clock
from execution.firestore.invocation import FirestoreInvocationStore
from execution.firestore.support import CallPolicy
from execution.models import ExecutionResult, Outcome, TradeIntent
from execution.settings import Settings

TENANT = "bench-tenant"
SYMBOL = "AAPL"
LIMIT_PRICE = 100.0
BUDGET_USD = 1e12
"""Budgeted accounts get a budget no run can fill: the cost measured is the in-flight document's."""
ALL_LIMITS: dict[str, Any] = {
    "max_inflight_usd": BUDGET_USD,
    "max_daily_orders": 1_000_000_000,
    "max_position_qty": 1e12,
}
"""Fully limited accounts: every limit the acquire counts, none that a run can fill."""


def account_ids(count: int) -> list[str]:
    """The broker account ids of a run with `count` accounts."""
    return [f"acct-{n:03d}" for n in range(count)]


def seed(db: firestore.Client, *, accounts: int, budget: bool, limits: bool = False) -> None:
    """Write the accounts, a fresh quote for `SYMBOL` and both kill switches (off).

    `budget` sets `max_inflight_usd` on every account; `limits` sets every counted limit.
    """
    now = system_clock()
    batch = db.batch()
    pending = 0
    for account in account_ids(accounts):
        fields: dict[str, Any] = {"max_order_notional_usd": 1_000_000.0}
        if budget:
            fields["max_inflight_usd"] = BUDGET_USD
        if limits:
            fields.update(ALL_LIMITS)
        batch.set(db.collection("tenants", TENANT, "accounts").document(account), fields)
        pending += 1
        if pending == 400:
            batch.commit()
            batch, pending = db.batch(), 0
    batch.set(
        db.collection("market_quotes").document(SYMBOL),
        {"bid": LIMIT_PRICE - 0.01, "ask": LIMIT_PRICE + 0.01, "ts": now},
    )
    batch.set(db.collection("ops").document("execution_kill_switch"), {"enabled": False})
    batch.set(
        db.collection("tenants", TENANT, "ops").document("execution_kill_switch"),
        {"enabled": False},
    )
    batch.commit()


def engine_service(
    db: firestore.Client, project: str, *, transactional: bool = False, **overrides: Any
) -> Service:
    """The service as `main.py` builds it (default settings, paper broker), on `db`.

    `transactional`: the same, with the transactional peer's acquire.
    """
    settings = Settings(project=project)
    if transactional:
        overrides["store"] = transactional_store(db, settings)
    return bootstrap(settings, db=db, clock=system_clock, **overrides)


def transactional_store(db: firestore.Client, settings: Settings) -> FirestoreInvocationStore:
    """The default invocation store, its acquire replaced by the transactional peer's."""
    policy = CallPolicy(timeout_seconds=settings.firestore_timeout_seconds)
    manager = TransactionalReservationManager(
        db,
        clock=system_clock,
        ttl=timedelta(seconds=settings.reservation_ttl_seconds),
        policy=policy,
        retention=settings.reservation_retention,
        max_attempts=settings.reservation_max_attempts,
    )
    return FirestoreInvocationStore(
        db,
        reservations=manager,
        clock=system_clock,
        policy=policy,
        shared_read_max_age_seconds=settings.shared_read_max_age_seconds,
    )


def intent(tag: str, thread: int, sequence: int, accounts: list[str]) -> TradeIntent:
    """A fresh limit buy, spread round-robin over `accounts`."""
    return TradeIntent.model_validate(
        {
            "tenant_id": TENANT,
            "broker_account_id": accounts[(thread + sequence * 7) % len(accounts)],
            "client_intent_id": f"{tag}-{thread}-{sequence}",
            "symbol": SYMBOL,
            "side": "buy",
            "qty": 1,
            "order_type": "limit",
            "limit_price": LIMIT_PRICE,
            "strategy_id": "bench",
        }
    )


def engine_operation(
    service: Service, tag: str, accounts: int
) -> Callable[[int, int], ExecutionResult]:
    """`op(thread, sequence)` executing one fresh intent through `execute_intent`."""
    ids = account_ids(accounts)

    def op(thread: int, sequence: int) -> ExecutionResult:
        return service.engine.execute_intent(intent(tag, thread, sequence, ids))

    return op


def placed(result: ExecutionResult) -> str | None:
    """None for a placed order, else the outcome and reason (a failure of the run)."""
    if result.outcome is Outcome.PLACED:
        return None
    return f"{result.outcome.value}: {result.reason}"


class BoundOperation:
    """The least store work per intent: txn(get + create), one write, one update."""

    def __init__(self, db: firestore.Client, tag: str) -> None:
        self._db = db
        self._tag = tag
        self._reservations = db.collection("tenants", TENANT, "execution_reservations")
        self._orders = db.collection("tenants", TENANT, "paper_orders")

    def __call__(self, thread: int, sequence: int) -> None:
        intent_id = f"{self._tag}-{thread}-{sequence}"
        now = datetime.now(UTC)
        reservation = self._reservations.document(intent_id)
        _reserve(
            self._db.transaction(),
            reservation,
            {
                "tenant_id": TENANT,
                "client_intent_id": intent_id,
                "symbol": SYMBOL,
                "amount_usd": LIMIT_PRICE,
                "status": "reserved",
                "lease_id": intent_id,
                "attempt": 1,
                "created_at": now,
                "expires_at": now,
            },
        )
        self._orders.document(intent_id).create(
            {"client_order_id": intent_id, "symbol": SYMBOL, "qty": 1, "status": "filled"}
        )
        reservation.update({"status": "released", "outcome": "placed", "released_at": now})


@firestore.transactional
def _reserve(
    transaction: firestore.Transaction,
    reservation: firestore.DocumentReference,
    fields: dict[str, Any],
) -> None:
    snapshot = reservation.get(transaction=transaction)
    if snapshot.exists:
        raise RuntimeError(f"{reservation.path} exists: the bound's ids must be fresh")
    transaction.create(reservation, fields)
