"""`FirestoreDeadLetters`: `execution_dead_letters/{dead_letter_id}` (contract)."""

from __future__ import annotations

from google.cloud import firestore

from execution.clock import Clock
from execution.dead_letters import dead_letter_fields
from execution.firestore.paths import dead_letter_ref
from execution.firestore.support import CallPolicy, store_errors
from execution.intake import Delivery


class FirestoreDeadLetters:
    """One document per message, so a redelivered bad message is recorded once."""

    def __init__(self, db: firestore.Client, *, clock: Clock, policy: CallPolicy) -> None:
        self._db = db
        self._clock = clock
        self._policy = policy

    def record(self, delivery: Delivery, reason: str) -> None:
        """Upsert the dead letter for `delivery`."""
        doc = dead_letter_ref(self._db, delivery.dead_letter_id)
        with store_errors("dead letter write"):
            doc.set(dead_letter_fields(delivery, reason, self._clock()), **self._policy.kwargs())
