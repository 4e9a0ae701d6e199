"""`FirestoreDeadLetters`: `execution_dead_letters/{message_id}` (contract)."""

from __future__ import annotations

from google.cloud import firestore

from execution.clock import Clock
from execution.firestore.support import CallPolicy, store_errors
from execution.intake import Delivery

_MAX_STORED_BYTES = 100_000


class FirestoreDeadLetters:
    """One document per message id, so a redelivered bad message is recorded once."""

    def __init__(self, db: firestore.Client, *, clock: Clock, policy: CallPolicy) -> None:
        self._db = db
        self._clock = clock
        self._policy = policy

    def record(self, delivery: Delivery, reason: str) -> None:
        """Upsert the dead letter for `delivery`."""
        doc = self._db.collection("execution_dead_letters").document(delivery.dead_letter_id)
        with store_errors("dead letter write"):
            doc.set(
                {
                    "message_id": delivery.message_id,
                    "reason": reason,
                    "data": delivery.data[:_MAX_STORED_BYTES].decode("utf-8", "replace"),
                    "truncated": len(delivery.data) > _MAX_STORED_BYTES,
                    "attributes": delivery.attributes,
                    "published_at": delivery.published_at,
                    "recorded_at": self._clock(),
                },
                **self._policy.kwargs(),
            )
