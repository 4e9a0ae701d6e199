"""The sweeper: the second safety net, for leases that no `finally` released.

A killed instance, a function timeout or a store outage during release leaves a document
`reserved` past its `expires_at`. Such a lease already stopped blocking the intent and the budget
(acquire takes over expired leases, budgets ignore them), but the document still claims an
invocation is running. Its hold on the account's position and daily orders is left alone: the
invocation may have died inside its broker call, so only a redelivery or the reconciler, which
ask the broker, end it (`execution.account_state`).
The sweeper marks it `expired` (outcome `expired`, retryable), so the record tells the truth and the
next delivery re-acquires it. Each expiry is fenced by the lease and the document's update time, so
two sweeps at once, or a sweep racing a late release, change a document at most once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Protocol

from execution.clock import Clock
from execution.telemetry import emit

logger = logging.getLogger(__name__)

MAX_REPORTED_IDS = 100
"""A sweep after an outage may expire thousands; the HTTP answer lists only the first ones."""


@dataclass(frozen=True)
class ExpiredLease:
    """A `reserved` document found past its expiry, as read by the sweep's query."""

    path: str
    tenant_id: str
    broker_account_id: str
    client_intent_id: str
    lease_id: str
    attempt: int
    expires_at: datetime
    token: object
    """Opaque to the sweeper: the store's record of the document as read (Firestore: snapshot)."""


@dataclass(frozen=True)
class UnreadableLease:
    """A lapsed `reserved` document the query found but that cannot be read as a lease.

    (`attempt: null`, a missing or mistyped field.) The sweeper reports, logs and skips it: it
    must never stop the page or the pages after it, since being old it would head every page.
    """

    path: str
    problem: str
    token: object
    """The position in the query, so the next page starts after it."""


FoundLease = ExpiredLease | UnreadableLease
"""One document of a page of `find_expired`, readable or not."""


class ExpiredLeaseStore(Protocol):
    """The storage primitives the sweeper needs."""

    def find_expired(
        self, now: datetime, *, limit: int, after: FoundLease | None
    ) -> list[FoundLease]:
        """Up to `limit` `reserved` documents with `expires_at <= now`, oldest first, after `after`.

        A document that cannot be read as a lease is an `UnreadableLease` in its place: one bad
        document never fails the page. Raises `StoreUnavailableError`.
        """
        ...

    def expire(self, lease: ExpiredLease, now: datetime) -> bool:
        """Mark `lease`'s document expired if it is unchanged since read; False if it changed.

        Raises `StoreUnavailableError`.
        """
        ...


@dataclass
class SweepReport:
    """What one sweep did (the HTTP answer of `sweep_reservations`)."""

    scanned: int = 0
    expired: int = 0
    skipped: int = 0
    errors: int = 0
    """Documents this sweep could not expire: unreadable ones and failed writes."""
    oldest_age_seconds: float | None = None
    complete: bool = True
    """False where the deadline stopped the sweep before it had seen every expired lease."""
    expired_ids: list[str] = field(default_factory=list)
    """Paths of the documents this sweep expired (the first `MAX_REPORTED_IDS`)."""
    error_ids: list[str] = field(default_factory=list)
    """Paths of the documents counted in `errors` (the first `MAX_REPORTED_IDS`)."""

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values."""
        return asdict(self)


class Sweeper:
    """Pages through expired leases until none are left or the deadline passes."""

    def __init__(
        self,
        store: ExpiredLeaseStore,
        *,
        clock: Clock,
        page_size: int = 200,
        deadline_seconds: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._clock = clock
        self._page_size = page_size
        self._deadline_seconds = deadline_seconds
        self._monotonic = monotonic

    def sweep(self, now: datetime | None = None) -> SweepReport:
        """Expire every lease past its expiry at `now` (default: the clock), within the deadline."""
        now = now or self._clock()
        stop_at = self._monotonic() + self._deadline_seconds
        report = SweepReport()
        after: FoundLease | None = None
        while True:
            if self._monotonic() >= stop_at:
                report.complete = False
                break
            page = self._store.find_expired(now, limit=self._page_size, after=after)
            for found in page:
                report.scanned += 1
                self._sweep_one(found, now, report)
            if len(page) < self._page_size:
                break
            after = page[-1]
        emit(
            logger,
            "exec.sweep.completed",
            **{k: v for k, v in report.as_dict().items() if k not in {"expired_ids", "error_ids"}},
        )
        return report

    def _sweep_one(self, found: FoundLease, now: datetime, report: SweepReport) -> None:
        """Expire one document, or count it in `errors`: one bad document never stops a sweep."""
        if isinstance(found, UnreadableLease):
            _count_error(report, found.path)
            emit(
                logger,
                "exec.sweep.malformed",
                logging.ERROR,
                path=found.path,
                problem=found.problem,
            )
            return
        age = (now - found.expires_at).total_seconds()
        report.oldest_age_seconds = max(report.oldest_age_seconds or 0.0, age)
        try:
            changed = self._store.expire(found, now)
        except Exception as exc:  # one bad document must not stop the sweep
            _count_error(report, found.path)
            emit(logger, "exec.sweep.error", logging.ERROR, path=found.path, error=repr(exc))
            return
        if not changed:
            report.skipped += 1
            return
        report.expired += 1
        _list_path(report.expired_ids, found.path)
        emit(
            logger,
            "exec.reservation.expired",
            logging.WARNING,
            tenant_id=found.tenant_id,
            broker_account_id=found.broker_account_id,
            client_intent_id=found.client_intent_id,
            lease_id=found.lease_id,
            attempt=found.attempt,
            expired_for_seconds=round(age, 3),
        )


def _count_error(report: SweepReport, path: str) -> None:
    report.errors += 1
    _list_path(report.error_ids, path)


def _list_path(paths: list[str], path: str) -> None:
    """Keep the report's lists short: an outage's aftermath may touch thousands of documents."""
    if len(paths) < MAX_REPORTED_IDS:
        paths.append(path)
