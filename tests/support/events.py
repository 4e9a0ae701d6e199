"""Pub/Sub deliveries as they reach `execute_intent`, built from the golden JSON in tests/data.

`push_body` is what a Pub/Sub push subscription POSTs (functions-framework turns it into a
CloudEvent); `cloud_event` is the binary-mode CloudEvent Eventarc delivers to a 2nd gen function.
Both start from the golden file and take overrides, so a test names only what it changes.
"""

from __future__ import annotations

import base64
import copy
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloudevents.http import CloudEvent

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
PUBSUB_PUBLISHED = "google.cloud.pubsub.topic.v1.messagePublished"
_ABSENT = object()


def golden(name: str) -> dict[str, Any]:
    """A fresh copy of the golden JSON `tests/data/<name>.json`."""
    loaded: dict[str, Any] = json.loads((DATA_DIR / f"{name}.json").read_text())
    return loaded


def now_rfc3339() -> str:
    """The current time as Pub/Sub writes `publishTime`."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def encode(payload: dict[str, Any] | bytes | str) -> str:
    """Message data as Pub/Sub sends it: base64 of the bytes (a dict is sent as JSON)."""
    if isinstance(payload, dict):
        payload = json.dumps(payload)
    raw = payload.encode() if isinstance(payload, str) else payload
    return base64.b64encode(raw).decode()


def message(payload: dict[str, Any] | bytes | str, message_id: Any, **fields: Any) -> Any:
    """A Pub/Sub message published now; a field overridden with `ABSENT` is left out."""
    body = golden("pubsub_push")["message"]
    body.update(data=encode(payload), messageId=message_id, message_id=message_id)
    body.update(publishTime=now_rfc3339(), publish_time=now_rfc3339())
    body.update(fields)
    return {k: v for k, v in body.items() if v is not _ABSENT}


def push_body(message_body: Any) -> bytes:
    """The JSON a push subscription POSTs for `message_body`."""
    body = golden("pubsub_push")
    body["message"] = message_body
    return json.dumps(body).encode()


def cloud_event(
    data: Any, *, event_type: str = PUBSUB_PUBLISHED, event_id: str = "ce-1"
) -> CloudEvent:
    """A CloudEvent with the golden attributes and `data` (the `{"message": ...}` envelope)."""
    attributes = golden("pubsub_cloud_event")["attributes"]
    attributes.update(type=event_type, id=event_id)
    return CloudEvent(attributes, copy.deepcopy(data))


def binary_headers(event: CloudEvent) -> dict[str, str]:
    """The `ce-*` headers of `event` in binary content mode (as Eventarc POSTs it)."""
    headers = {f"ce-{k}": str(v) for k, v in event.get_attributes().items() if k != "data"}
    headers.pop("ce-datacontenttype", None)
    return {**headers, "Content-Type": "application/json"}


ABSENT: Any = _ABSENT
"""Pass as a field of `message` to leave that field out."""


def intent_payload(tenant_id: str, **overrides: Any) -> dict[str, Any]:
    """A valid limit-buy intent as its publisher sends it (JSON-ready), with a unique id."""
    payload: dict[str, Any] = {
        "tenant_id": tenant_id,
        "broker_account_id": "acct-1",
        "client_intent_id": f"intent-{uuid.uuid4().hex[:12]}",
        "symbol": "AAPL",
        "side": "buy",
        "qty": 3,
        "order_type": "limit",
        "limit_price": 150.0,
    }
    payload.update(overrides)
    return payload
