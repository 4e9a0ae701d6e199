"""Turning a Pub/Sub delivery into a trade intent, or into the reason it can never be one."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from execution.errors import InvalidIntentError
from execution.models import TradeIntent, validate_document_id


@dataclass(frozen=True)
class Delivery:
    """One Pub/Sub message as delivered: its id, publish time, and raw data."""

    message_id: str
    published_at: datetime | None
    data: bytes
    attributes: dict[str, str]

    @property
    def dead_letter_id(self) -> str:
        """A safe document id for this message (Pub/Sub ids are digits; never trust that)."""
        try:
            return validate_document_id(self.message_id)
        except ValueError:
            return "msg-" + hashlib.sha256(self.message_id.encode()).hexdigest()[:32]


def delivery_from_cloud_event(data: Any) -> Delivery:
    """Read the Pub/Sub message out of a CloudEvent's `data` (`{"message": {...}}`)."""
    message = data.get("message", {}) if isinstance(data, dict) else {}
    raw = message.get("data") or ""
    try:
        payload = base64.b64decode(raw, validate=True) if raw else b""
    except (binascii.Error, ValueError):
        payload = raw.encode() if isinstance(raw, str) else b""
    published_at = None
    publish_time = message.get("publishTime") or message.get("publish_time")
    if isinstance(publish_time, str):
        try:
            published_at = datetime.fromisoformat(publish_time.replace("Z", "+00:00"))
        except ValueError:
            published_at = None
    return Delivery(
        message_id=str(message.get("messageId") or message.get("message_id") or ""),
        published_at=published_at,
        data=payload,
        attributes=dict(message.get("attributes") or {}),
    )


def parse_intent(data: bytes) -> TradeIntent:
    """Validate the message data as a trade intent; `InvalidIntentError` names what is wrong."""
    if not data:
        raise InvalidIntentError("empty message: publish a JSON trade intent")
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidIntentError(f"not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise InvalidIntentError(f"expected a JSON object, got {type(document).__name__}")
    try:
        return TradeIntent.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'intent'}: {err['msg']}"
            for err in exc.errors()
        )
        raise InvalidIntentError(f"invalid trade intent: {problems}") from exc
