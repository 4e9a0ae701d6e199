"""Sweeper rate: 10,000 reservations past their expiry, swept as production sweeps them.

The documents are written as acquire writes them (`new_record` + `record_to_document`), spread
over 20 tenants, already expired, in batches of 500. Then sweeps run back to back — each one the
production `Sweeper` over `FirestoreExpiredLeases`, with the settings' default page size and
deadline — until one reports itself complete. The rate is documents expired per second of sweeping.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bench.common import client, progress, reset
from execution.clock import system_clock
from execution.firestore.reservations import record_to_document, reservation_ref
from execution.firestore.support import CallPolicy
from execution.firestore.sweeper_store import FirestoreExpiredLeases
from execution.reservations import ReservationRequest, new_record
from execution.settings import Settings
from execution.sweeper import ExpiredLease, FoundLease, Sweeper

BATCH = 500
TENANTS = 20


class _Progress:
    """Passes through to the store; prints a line every 1,000 expiries."""

    def __init__(self, inner: FirestoreExpiredLeases, total: int) -> None:
        self._inner = inner
        self._total = total
        self.expired = 0
        self.pages = 0
        self.started = time.perf_counter()
        self.timeline: list[tuple[float, int]] = [(0.0, 0)]
        """(seconds since the first sweep began, documents expired so far), every 500."""

    def find_expired(
        self, now: datetime, *, limit: int, after: FoundLease | None
    ) -> list[FoundLease]:
        self.pages += 1
        return self._inner.find_expired(now, limit=limit, after=after)

    def expire(self, lease: ExpiredLease, now: datetime) -> bool:
        changed = self._inner.expire(lease, now)
        self.expired += 1
        if self.expired % 500 == 0:
            self.timeline.append((round(time.perf_counter() - self.started, 2), self.expired))
        if self.expired % 1000 == 0:
            progress(f"sweeper: {self.expired}/{self._total} expired")
        return changed


@dataclass
class SweepFigures:
    """What sweeping `documents` expired reservations took."""

    documents: int
    write_seconds: float
    sweep_seconds: float
    sweeps: int
    pages: int
    expired: int
    page_size: int
    deadline_seconds: float
    timeline: list[tuple[float, int]]

    @property
    def rate(self) -> float:
        """Documents expired per second of sweeping."""
        return self.expired / self.sweep_seconds if self.sweep_seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return {
            "documents": self.documents,
            "expired": self.expired,
            "sweeps": self.sweeps,
            "pages": self.pages,
            "page_size": self.page_size,
            "deadline_seconds": self.deadline_seconds,
            "write_seconds": round(self.write_seconds, 2),
            "sweep_seconds": round(self.sweep_seconds, 2),
            "expired_per_s": round(self.rate, 1),
            "timeline": self.timeline,
        }


def measure(project: str, *, documents: int) -> SweepFigures:
    """Write `documents` expired reservations, then sweep them all."""
    reset(project)
    db = client(project)
    settings = Settings(project=project)
    policy = CallPolicy(timeout_seconds=settings.firestore_timeout_seconds)
    start = time.perf_counter()
    _write_expired(db, documents)
    write_seconds = time.perf_counter() - start
    progress(f"sweeper: wrote {documents} expired reservations in {write_seconds:.1f}s; sweeping")

    store = _Progress(
        FirestoreExpiredLeases(db, policy=policy, retention=settings.reservation_retention),
        documents,
    )
    sweeper = Sweeper(store, clock=system_clock, deadline_seconds=settings.sweep_deadline_seconds)
    page_size = _page_size(sweeper)
    expired = sweeps = 0
    start = store.started = time.perf_counter()
    while True:
        report = sweeper.sweep()
        sweeps += 1
        expired += report.expired
        if report.complete or sweeps >= 20:
            break
    sweep_seconds = time.perf_counter() - start
    db.close()
    return SweepFigures(
        documents=documents,
        write_seconds=write_seconds,
        sweep_seconds=sweep_seconds,
        sweeps=sweeps,
        pages=store.pages,
        expired=expired,
        page_size=page_size,
        deadline_seconds=settings.sweep_deadline_seconds,
        timeline=store.timeline,
    )


def _write_expired(db: Any, documents: int) -> None:
    expired_at = system_clock() - timedelta(hours=1)
    ttl = timedelta(minutes=10)
    batch = db.batch()
    for n in range(documents):
        tenant = f"bench-sweep-{n % TENANTS:02d}"
        request = ReservationRequest(
            tenant_id=tenant,
            broker_account_id="acct-000",
            client_intent_id=f"expired-{n:05d}",
            symbol="AAPL",
            amount_usd=100.0,
            payload_hash="bench",
        )
        record = new_record(
            request,
            previous=None,
            lease_id=f"lease-{n:05d}",
            now=expired_at - ttl,
            ttl=ttl,
            counts_against_budget=False,
        )
        batch.create(
            reservation_ref(db, tenant, request.client_intent_id), record_to_document(record)
        )
        if (n + 1) % BATCH == 0 or n + 1 == documents:
            batch.commit()
            batch = db.batch()
            if (n + 1) % 2500 == 0:
                progress(f"sweeper: wrote {n + 1}/{documents} expired reservations")


def _page_size(sweeper: Sweeper) -> int:
    """The page size the production sweeper uses (its constructor default)."""
    return int(inspect.signature(Sweeper.__init__).parameters["page_size"].default)
