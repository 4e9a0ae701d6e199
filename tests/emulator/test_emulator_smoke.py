"""The emulator fixtures work: Firestore reads back what `db` wrote, resets wipe it, and a
Pub/Sub message published on the emulator is pulled back."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from google.cloud import firestore
from google.cloud.pubsub_v1 import PublisherClient, SubscriberClient


def test_a_written_document_reads_back(
    db: firestore.Client, reset_firestore: Callable[[], None]
) -> None:
    ref = db.collection("smoke").document("one")
    ref.set({"answer": 42, "label": "smoke"})

    snapshot = ref.get()

    assert snapshot.exists
    assert snapshot.to_dict() == {"answer": 42, "label": "smoke"}


def test_a_reset_deletes_the_module_projects_documents(
    db: firestore.Client, reset_firestore: Callable[[], None]
) -> None:
    ref = db.collection("smoke").document("two")
    ref.set({"answer": 43})

    reset_firestore()

    assert not ref.get().exists


def test_a_published_message_is_pulled_from_a_subscription(
    pubsub_emulator_host: str, firestore_project: str
) -> None:
    # Clients read PUBSUB_EMULATOR_HOST when built; the fixture has set it.
    publisher = PublisherClient()
    subscriber = SubscriberClient()
    topic = publisher.topic_path(firestore_project, f"smoke-{uuid.uuid4().hex[:8]}")
    subscription = subscriber.subscription_path(firestore_project, f"smoke-{uuid.uuid4().hex[:8]}")
    try:
        publisher.create_topic(name=topic)
        subscriber.create_subscription(name=subscription, topic=topic)
        publisher.publish(topic, b"ping", kind="smoke").result(timeout=10)

        response = subscriber.pull(subscription=subscription, max_messages=1, timeout=10)

        [received] = response.received_messages
        assert (received.message.data, dict(received.message.attributes)) == (
            b"ping",
            {"kind": "smoke"},
        )
    finally:
        subscriber.close()
        publisher.transport.close()
