"""Topics and push subscriptions on the Pub/Sub emulator, wired to a functions server."""

from __future__ import annotations

import json
from typing import Any

from google.cloud.pubsub_v1 import PublisherClient, SubscriberClient


class PushChannel:
    """One topic with a push subscription to `endpoint`, redelivering a failed push every second.

    No retry policy on purpose (docs/EMULATOR-FACTS.md, F5): a subscription with one (1-2 s
    backoff) pushed a failing message at 0, 1, 4, 7, 10 and 13 s and then never again, while one
    without re-pushes it about every second for as long as it fails.
    """

    redelivery_interval_seconds = 1.0

    def __init__(
        self, project: str, name: str, endpoint: str, *, ack_deadline_seconds: int = 10
    ) -> None:
        self.publisher = PublisherClient()
        self.subscriber = SubscriberClient()
        self.topic = self.publisher.topic_path(project, name)
        self.subscription = self.subscriber.subscription_path(project, f"{name}-push")
        self.publisher.create_topic(request={"name": self.topic})
        self.subscriber.create_subscription(
            request={
                "name": self.subscription,
                "topic": self.topic,
                "push_config": {"push_endpoint": endpoint},
                "ack_deadline_seconds": ack_deadline_seconds,
            }
        )

    def publish(self, payload: dict[str, Any] | bytes) -> str:
        """Publish one message (a dict is sent as JSON); returns its message id."""
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return str(self.publisher.publish(self.topic, data).result(timeout=30))

    def close(self) -> None:
        """Delete the subscription and the topic, so the emulator stops pushing."""
        self.subscriber.delete_subscription(request={"subscription": self.subscription})
        self.publisher.delete_topic(request={"topic": self.topic})
        self.subscriber.close()
