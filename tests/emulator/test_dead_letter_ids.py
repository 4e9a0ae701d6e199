"""Dead letters are one per delivered message: ids shared across topics lose nothing.

Pub/Sub message ids are unique within a topic only: two topics (or a hostile push) may deliver
different messages under one id. Each is delivered through `main.answer_delivery` into the real
`FirestoreDeadLetters` on the emulator; each must keep its own dead letter and reason, and a
redelivery of either must add none.
"""

from __future__ import annotations

from typing import Any

from google.cloud import firestore

import main
from execution.clock import FakeClock
from execution.intake import delivery_from_cloud_event
from execution.models import validate_document_id
from tests.support.alpaca_wire import pubsub_event
from tests.support.builders import emulator_service, unique

DEAD_LETTERS = "execution_dead_letters"


def letters_of(db: firestore.Client, message_id: str) -> dict[str, dict[str, Any]]:
    """The dead letters recorded for `message_id`, by document id."""
    query = db.collection(DEAD_LETTERS).where(
        filter=firestore.FieldFilter("message_id", "==", message_id)
    )
    return {snap.id: snap.to_dict() or {} for snap in query.stream()}


def test_two_messages_under_one_id_keep_a_dead_letter_each_and_redeliveries_add_none(
    db: firestore.Client,
) -> None:
    service = emulator_service(db, FakeClock())
    message_id = unique("m")
    first, second = b"{not json from topic a", b'["an array from topic b"]'
    events = [pubsub_event(data, message_id) for data in (first, second)]

    # Each delivered, then redelivered twice (a redelivery is the same message: same publish time).
    for event in [*events, *events, *events]:
        main.answer_delivery(service, delivery_from_cloud_event(event.data))

    letters = letters_of(db, message_id)
    by_data = {letter["data"]: (doc_id, letter["reason"]) for doc_id, letter in letters.items()}
    assert len(letters) == 2
    assert set(by_data) == {first.decode(), second.decode()}
    assert "not JSON" in by_data[first.decode()][1]
    assert "got list" in by_data[second.decode()][1]
    assert by_data[first.decode()][0] == message_id  # the first keeps the id the contract names
    for doc_id in letters:
        assert validate_document_id(doc_id) == doc_id
