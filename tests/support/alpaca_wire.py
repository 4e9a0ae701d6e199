"""The service against a loopback Alpaca (a scripted `WireServer` or the sandbox), and the
Pub/Sub events that drive `main.execute_intent` in the emulator tests."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from cloudevents.http import CloudEvent
from google.cloud import firestore

from execution.bootstrap import Service, bootstrap
from execution.brokers.base import Broker
from execution.models import TradeIntent
from execution.settings import Settings
from tests.support.builders import client_order_id_of, unique
from tests.support.wire_server import Script, http_answer


def alpaca_env(base_url: str, *, key_id: str, secret_key: str, **extra: str) -> dict[str, str]:
    """Settings of a service whose broker is the Alpaca at `base_url`; `extra` adds or overrides."""
    return {
        "BROKER": "alpaca",
        "APCA_API_KEY_ID": key_id,
        "APCA_API_SECRET_KEY": secret_key,
        "APCA_API_BASE_URL": base_url,
        "AGENT_MODE": "LIVE",  # a loopback Alpaca is not Alpaca's paper host
        "BROKER_TIMEOUT_SECONDS": "2",
        "FUNCTION_TIMEOUT_SECONDS": "20",
        "RESERVATION_TTL_SECONDS": "30",
        "FIRESTORE_TIMEOUT_SECONDS": "5",
        **extra,
    }


def alpaca_service(
    db: firestore.Client,
    base_url: str,
    project: str,
    *,
    key_id: str,
    secret_key: str,
    broker: Broker | None = None,
) -> Service:
    """The service as deployed (settings from `alpaca_env`) on the emulator project `project`;
    `broker` replaces the `AlpacaBroker` it would build (say, one whose HTTP client a test closes).
    """
    env = alpaca_env(base_url, key_id=key_id, secret_key=secret_key, GOOGLE_CLOUD_PROJECT=project)
    return bootstrap(Settings.from_env(env), db=db, broker=broker)


def pubsub_event(data: bytes, message_id: str) -> CloudEvent:
    """The CloudEvent functions-framework makes of a Pub/Sub push of `data`."""
    return CloudEvent(
        {
            "type": "google.cloud.pubsub.topic.v1.messagePublished",
            "source": "//pubsub.googleapis.com/projects/demo/topics/trade-intents",
        },
        {
            "message": {
                "data": base64.b64encode(data).decode(),
                "messageId": message_id,
                "publishTime": datetime.now(UTC).isoformat(),
            },
            "subscription": "projects/demo/subscriptions/trade-intents-push",
        },
    )


def intent_event(intent: TradeIntent, message_id: str | None = None) -> CloudEvent:
    """`intent` published as JSON, under `message_id` (a fresh one by default)."""
    data = json.dumps(intent.model_dump(mode="json")).encode()
    return pubsub_event(data, message_id or unique("m"))


def order_json(intent: TradeIntent, **fields: Any) -> bytes:
    """Alpaca's answer for `intent`'s order (a fresh id, `accepted`), with `fields` changed."""
    order = {
        "id": str(uuid.uuid4()),
        "client_order_id": client_order_id_of(intent),
        "symbol": intent.symbol,
        "side": intent.side,
        "qty": str(intent.qty),
        "status": "accepted",
        "type": intent.order_type,
        "limit_price": str(intent.limit_price),
        "time_in_force": "day",
        "filled_avg_price": None,
    }
    return json.dumps({**order, **fields}).encode()


def json_ok(body: bytes) -> Script:
    """A 200 answer carrying `body` as JSON."""
    return http_answer(b"HTTP/1.1 200 OK", body, b"Content-Type: application/json")
