"""`FirestoreDeadLetters`: `execution_dead_letters/{dead_letter_id}` (contract)."""

from __future__ import annotations

from google.api_core import exceptions as gexc
from google.cloud import firestore

from execution.clock import Clock
from execution.dead_letters import dead_letter_fields
from execution.firestore.paths import dead_letter_ref
from execution.firestore.support import CallPolicy, store_errors
from execution.intake import Delivery


class FirestoreDeadLetters:
    """One document per message, so a redelivered bad message is recorded once and a different
    message under the same id (another topic's) never replaces it."""

    def __init__(self, db: firestore.Client, *, clock: Clock, policy: CallPolicy) -> None:
        self._db = db
        self._clock = clock
        self._policy = policy

    def record(self, delivery: Delivery, reason: str) -> str:
        """Create the dead letter at the message's id; where a document is there already, it is
        this message's (a redelivery: kept as it is) or another's, and this one goes to its own
        id (`Delivery.own_dead_letter_id`), which no other message can write."""
        fields = dead_letter_fields(delivery, reason, self._clock())
        doc = dead_letter_ref(self._db, delivery.dead_letter_id)
        with store_errors("dead letter write"):
            try:
                doc.create(fields, **self._policy.kwargs())
                return delivery.dead_letter_id
            except gexc.AlreadyExists:
                pass  # a redelivery's, or another message's under the same id: read to tell
            held = doc.get(**self._policy.kwargs()).to_dict() or {}
            if held.get("delivery_sha256") == fields["delivery_sha256"]:
                return delivery.dead_letter_id
            own = dead_letter_ref(self._db, delivery.own_dead_letter_id)
            own.set(fields, **self._policy.kwargs())  # an upsert: only this message writes here
            return delivery.own_dead_letter_id
