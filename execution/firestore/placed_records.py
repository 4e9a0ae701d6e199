"""`FirestorePlacedRecords`: the reconciler's reads, as collection-group queries over reservations.

Every query spans every tenant; their indexes are declared in `firestore.indexes.json`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from execution.broker_truth import UNKNOWN_FATE_OUTCOMES
from execution.documents import (
    UNSETTLED_ORDER,
    MalformedDocumentError,
    ReservationKeys,
    reservation_from_document,
)
from execution.firestore.paths import RESERVATIONS
from execution.firestore.support import CallPolicy, store_errors
from execution.models import Outcome
from execution.reservations import ReservationRecord
from execution.telemetry import emit

logger = logging.getLogger(__name__)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ended_with_query(
    db: firestore.Client, outcome: Outcome, since: datetime = _EPOCH
) -> firestore.Query:
    """Reservations of every tenant ended with `outcome` at or after `since` (any age)."""
    return (
        db.collection_group(RESERVATIONS)
        .where(filter=FieldFilter("outcome", "==", outcome.value))
        .where(filter=FieldFilter("released_at", ">=", since))
    )


def placed_since_all_tenants_query(db: firestore.Client, since: datetime) -> firestore.Query:
    """Reservations of every tenant released `placed` at or after `since`."""
    return ended_with_query(db, Outcome.PLACED, since)


MARKED_AT = f"{UNSETTLED_ORDER}.marked_at"


def marked_records_query(db: firestore.Client) -> firestore.Query:
    """Reservations of every tenant carrying an `unsettled_order` marker (any `marked_at`)."""
    return db.collection_group(RESERVATIONS).where(filter=FieldFilter(MARKED_AT, ">=", _EPOCH))


def by_client_order_id_query(db: firestore.Client, client_order_id: str) -> firestore.Query:
    """The reservation (of any tenant) carrying `client_order_id`."""
    return (
        db.collection_group(RESERVATIONS)
        .where(filter=FieldFilter("client_order_id", "==", client_order_id))
        .limit(1)
    )


class FirestorePlacedRecords:
    """The reconciler's `PlacedRecords` port on Firestore."""

    def __init__(self, db: firestore.Client, *, policy: CallPolicy) -> None:
        self._db = db
        self._policy = policy

    def placed_since(self, since: datetime) -> Iterator[ReservationRecord]:
        """Placed records, streamed; a malformed one is logged and skipped."""
        return self._records(placed_since_all_tenants_query(self._db, since), "placed records")

    def marked(self) -> Iterator[ReservationRecord]:
        """Records carrying an `unsettled_order` marker, streamed; a malformed one is logged
        and skipped."""
        return self._records(marked_records_query(self._db), "marked records")

    def unknown_fates(self) -> Iterator[ReservationRecord]:
        """Records ended while an order may exist (`exception`, `expired`), streamed; a
        malformed one is logged and skipped."""
        for outcome in sorted(UNKNOWN_FATE_OUTCOMES):
            yield from self._records(ended_with_query(self._db, outcome), f"{outcome} records")

    def _records(self, query: firestore.Query, what: str) -> Iterator[ReservationRecord]:
        with store_errors(f"{what} query"):
            for snap in query.stream(**self._policy.kwargs()):
                try:
                    yield reservation_from_document(snap.to_dict() or {})
                except MalformedDocumentError as exc:
                    emit(
                        logger,
                        "exec.reconcile.malformed_record",
                        logging.WARNING,
                        path=snap.reference.path,
                        error=repr(exc),
                    )

    def locate(self, client_order_id: str) -> tuple[str, str] | None:
        """(tenant_id, client_intent_id) of the record with `client_order_id`, or None."""
        with store_errors("client order id lookup"):
            snaps = list(
                by_client_order_id_query(self._db, client_order_id).stream(**self._policy.kwargs())
            )
        if not snaps:
            return None
        record = ReservationKeys.parse(snaps[0].to_dict() or {})
        return record.tenant_id, record.client_intent_id
