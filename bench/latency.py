"""What the reservation adds to one intent's latency: the same engine with and without it.

Both engines are the default wiring on the same client; in one, every invocation's reservations
are a no-op `ReservationManager` (every acquire hands out `Acquired(NoopHandle())`, as fail-open
does). Both still make the invocation's opening read (the account and in-flight documents the
acquire decides on ride on it); what differs is the acquire's commit and the release (which the
ledger entry then no longer rides on: it is written on its own). The intents run one at a
time, alternating between the two engines, so both see the same moments of the machine's noise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from bench.common import client, percentile, progress, reset
from bench.workload import account_ids, engine_service, intent, seed
from execution.clock import system_clock
from execution.firestore.invocation import FirestoreInvocationStore
from execution.firestore.reservations import FirestoreReservationManager
from execution.firestore.support import CallPolicy
from execution.reservations import (
    Acquired,
    Acquisition,
    NoopHandle,
    ReservationManager,
    ReservationRequest,
)
from execution.settings import Settings


class NoReservations:
    """Holds nothing: the engine's path without the reservation's store work."""

    def acquire(self, request: ReservationRequest) -> Acquisition:
        return Acquired(NoopHandle(request.client_order_id))


def without_reservations(db: Any, project: str) -> FirestoreInvocationStore:
    """The default invocation store, its reservations replaced by `NoReservations`."""
    settings = Settings(project=project)
    policy = CallPolicy(timeout_seconds=settings.firestore_timeout_seconds)
    unused = FirestoreReservationManager(
        db,
        clock=system_clock,
        ttl=timedelta(seconds=settings.reservation_ttl_seconds),
        policy=policy,
    )

    def no_reservations(_: ReservationManager) -> ReservationManager:
        return NoReservations()

    return FirestoreInvocationStore(
        db,
        reservations=unused,
        clock=system_clock,
        policy=policy,
        wrap_reservations=no_reservations,
    )


@dataclass
class Latency:
    """Per-intent wall times (ms) of both engines."""

    with_reservation: list[float]
    without_reservation: list[float]

    def summary(self) -> dict[str, float]:
        """p50/p99 of both and the difference the reservation makes."""
        out: dict[str, float] = {}
        for name, values in (
            ("with", self.with_reservation),
            ("without", self.without_reservation),
        ):
            out[f"{name}_p50_ms"] = round(percentile(values, 50), 2)
            out[f"{name}_p99_ms"] = round(percentile(values, 99), 2)
        out["added_p50_ms"] = round(out["with_p50_ms"] - out["without_p50_ms"], 2)
        out["added_p99_ms"] = round(out["with_p99_ms"] - out["without_p99_ms"], 2)
        out["intents_each"] = len(self.with_reservation)
        return out

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return self.summary()


def measure(project: str, *, intents: int, accounts: int = 20) -> Latency:
    """`intents` sequential intents through each engine, alternating."""
    reset(project)
    db = client(project)
    seed(db, accounts=accounts, budget=False)
    real = engine_service(db, project)
    bare = engine_service(db, project, store=without_reservations(db, project))
    ids = account_ids(accounts)
    for n in range(20):  # warm both paths (channels, code) before timing
        real.engine.execute_intent(intent("warm-with", 0, n, ids))
        bare.engine.execute_intent(intent("warm-without", 0, n, ids))
    timed: dict[str, list[float]] = {"with": [], "without": []}
    for n in range(intents):
        order = (
            (("with", real), ("without", bare)) if n % 2 else (("without", bare), ("with", real))
        )
        for name, service in order:
            item = intent(f"lat-{name}", 0, n, ids)
            start = time.perf_counter()
            service.engine.execute_intent(item)
            timed[name].append((time.perf_counter() - start) * 1000)
        if (n + 1) % 100 == 0:
            progress(f"latency: {n + 1}/{intents} intents through each engine")
    db.close()
    return Latency(timed["with"], timed["without"])
