"""The dead-letter port, and the record it stores: safe to write whatever arrived.

A dead letter is written for input that can never execute, so its every field comes from
outside. `dead_letter_fields` makes any delivery storable: the reason printable and bounded, the
payload whole up to `MAX_STORED_DATA_BYTES` (else its first bytes, flagged) with its SHA-256 and
size, attribute names encoded into names Firestore accepts, and values bounded.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import quote

from execution.documents import DeadLetterDocument
from execution.intake import Delivery
from execution.text import bounded_printable

MAX_REASON_CHARS = 2000
MAX_STORED_DATA_BYTES = 100_000
MAX_ATTRIBUTES = 100
MAX_ATTRIBUTE_NAME_CHARS = 256
MAX_ATTRIBUTE_VALUE_CHARS = 1024
EMPTY_ATTRIBUTE_NAME = "(empty)"
"""The stored name of an attribute whose name is empty (percent-encoding never yields it)."""


class DeadLetters(Protocol):
    """Records undeliverable messages, one document per message: at
    `execution_dead_letters/{Delivery.dead_letter_id}`, or at `Delivery.own_dead_letter_id`
    where another message (another topic's, under the same id) holds that one."""

    def record(self, delivery: Delivery, reason: str) -> str:
        """Write `dead_letter_fields` once per message (a redelivery writes nothing new) and
        return the document id; raises `StoreUnavailableError` (retry)."""
        ...


def dead_letter_fields(delivery: Delivery, reason: str, recorded_at: datetime) -> dict[str, Any]:
    """The dead-letter document for `delivery`: bounded and storable whatever it holds."""
    attributes = list(delivery.attributes.items())
    return DeadLetterDocument(
        message_id=delivery.message_label,
        delivery_sha256=delivery.delivery_sha256,
        reason=bounded_printable(reason, MAX_REASON_CHARS),
        data=delivery.data[:MAX_STORED_DATA_BYTES].decode("utf-8", "replace"),
        truncated=len(delivery.data) > MAX_STORED_DATA_BYTES,
        data_bytes=len(delivery.data),
        data_sha256=hashlib.sha256(delivery.data).hexdigest(),
        attributes={
            stored_attribute_name(name): bounded_printable(value, MAX_ATTRIBUTE_VALUE_CHARS)
            for name, value in attributes[:MAX_ATTRIBUTES]
        },
        attributes_dropped=max(len(attributes) - MAX_ATTRIBUTES, 0),
        published_at=delivery.published_at,
        recorded_at=recorded_at,
    ).to_document()


def stored_attribute_name(name: str) -> str:
    """`name` percent-encoded (UTF-8) into a Firestore field name; unchanged when already safe.

    Letters, digits, `_`, `-`, `.` and `~` stay; everything else becomes `%XX`. A name of the
    reserved form `__x__` gets its first `_` encoded, an empty one is `(empty)`, and a name whose
    encoding is too long keeps its start and a hash of the whole.
    """
    if not name:
        return EMPTY_ATTRIBUTE_NAME
    raw = name.encode("utf-8", "surrogatepass")
    encoded = quote(raw, safe="")
    if encoded.startswith("__") and encoded.endswith("__"):
        encoded = "%5F" + encoded[1:]
    if len(encoded) > MAX_ATTRIBUTE_NAME_CHARS:
        digest = hashlib.sha256(raw).hexdigest()[:16]
        encoded = f"{encoded[: MAX_ATTRIBUTE_NAME_CHARS - 17]}~{digest}"
    return encoded
