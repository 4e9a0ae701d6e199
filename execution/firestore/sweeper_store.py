"""`FirestoreExpiredLeases`: the sweeper's query and its fenced expiry write.

The query is a collection-group query over `execution_reservations` with `status == "reserved"`
and `expires_at <= now`, ordered by `expires_at`: production needs the composite index declared in
`firestore.indexes.json` (the emulator never asks for it). It runs outside any transaction, since a
query inside one locks the whole collection id in the emulator (docs/EMULATOR-FACTS.md, F2).
Each expiry is an update preconditioned on the update time the query saw: a document that
changed since (released, taken over, expired by a concurrent sweep) is skipped, never overwritten;
one that changed but still holds the same lapsed lease (its hold ended by the reconciler) is
read again and expired.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from execution.documents import MalformedDocumentError, ReservationDocument, ended_fields
from execution.firestore.paths import RESERVATIONS
from execution.firestore.support import CallPolicy, store_errors
from execution.models import Outcome
from execution.reservations import ReservationStatus
from execution.sweeper import ExpiredLease, FoundLease, UnreadableLease


def expired_leases_query(db: firestore.Client, now: datetime) -> firestore.Query:
    """The sweeper's query; `tests` check `firestore.indexes.json` declares its index."""
    return (
        db.collection_group(RESERVATIONS)
        .where(filter=FieldFilter("status", "==", ReservationStatus.RESERVED.value))
        .where(filter=FieldFilter("expires_at", "<=", now))
        .order_by("expires_at")
    )


class FirestoreExpiredLeases:
    """Finds and expires lapsed reservations."""

    def __init__(
        self,
        db: firestore.Client,
        *,
        policy: CallPolicy,
        retention: timedelta = timedelta(days=30),
    ) -> None:
        self._db = db
        self._policy = policy
        self._retention = retention

    def find_expired(
        self, now: datetime, *, limit: int, after: FoundLease | None
    ) -> list[FoundLease]:
        """One page of lapsed `reserved` documents, oldest first, each read on its own."""
        query = expired_leases_query(self._db, now).limit(limit)
        if after is not None:
            assert isinstance(after.token, firestore.DocumentSnapshot)
            query = query.start_after(after.token)
        with store_errors("sweep query"):
            snapshots = list(query.stream(**self._policy.kwargs()))
        return [lease_from_snapshot(snap) for snap in snapshots]

    def expire(self, lease: ExpiredLease, now: datetime) -> bool:
        """Set `expired` if the document still holds the lapsed lease the query saw; False where
        it changed (released, taken over, expired by a concurrent sweep).

        A write that leaves the lease as it was also fails the precondition: the reconciler
        ending the lease's hold (`counted_lease_id` only) between the query and this expiry
        would otherwise keep a lapsed lease `reserved` until the next sweep. So a failed
        precondition reads the document again and expires what it holds now, while that is still
        the same lapsed lease (a bounded number of times).
        """
        snap = lease.token
        assert isinstance(snap, firestore.DocumentSnapshot)
        for _ in range(_MAX_EXPIRY_ATTEMPTS):
            if self._expire_version(snap, now):
                return True
            with store_errors("sweep expiry read"):
                snap = snap.reference.get(**self._policy.kwargs())
            if not _holds_lapsed_lease(snap, lease.lease_id, now):
                return False
        return False

    def _expire_version(self, snap: firestore.DocumentSnapshot[Any], now: datetime) -> bool:
        """Set `expired` if the document is still at `snap`'s version; False where it changed."""
        batch = self._db.batch()
        batch.update(
            snap.reference,
            ended_fields(
                ReservationStatus.EXPIRED,
                Outcome.EXPIRED,
                error="lease expired before release: the invocation died or lost the store",
                released_at=now,
                purge_at=now + self._retention,
            ),
            option=self._db.write_option(last_update_time=snap.update_time),
        )
        # The lease's hold, if any, is left in its account's state: the invocation died, maybe
        # inside its broker call, so its order's fate is unknown (`execution.account_state`).
        try:
            with store_errors("sweep expiry"):
                batch.commit(**self._policy.kwargs())
        except gexc.FailedPrecondition:
            return False
        return True


_MAX_EXPIRY_ATTEMPTS = 3


def _holds_lapsed_lease(
    snap: firestore.DocumentSnapshot[Any], lease_id: str, now: datetime
) -> bool:
    """Whether the document is still `reserved` by `lease_id`, lapsed at `now`."""
    data = (snap.to_dict() or {}) if snap.exists else {}
    expires_at = data.get("expires_at")
    return (
        data.get("status") == ReservationStatus.RESERVED.value
        and data.get("lease_id") == lease_id
        and isinstance(expires_at, datetime)
        and expires_at <= now
    )


def lease_from_snapshot(snap: firestore.DocumentSnapshot[Any]) -> FoundLease:
    """The lease a lapsed document holds, or an `UnreadableLease` saying what is wrong with it."""
    try:
        document = ReservationDocument.parse(snap.to_dict() or {})
    except MalformedDocumentError as exc:
        return UnreadableLease(path=snap.reference.path, problem=str(exc), token=snap)
    return ExpiredLease(
        path=snap.reference.path,
        tenant_id=document.tenant_id,
        broker_account_id=document.broker_account_id,
        client_intent_id=document.client_intent_id,
        lease_id=document.lease_id,
        attempt=document.attempt,
        expires_at=document.expires_at,
        token=snap,
    )
