"""Turning a Pub/Sub delivery into a trade intent, or into the reason it can never be one.

Every input gets an answer. `delivery_from_cloud_event` (an Eventarc CloudEvent's data) and
`delivery_from_push_body` (the raw body a Pub/Sub push subscription POSTs, whatever its bytes)
never raise: where the envelope cannot carry an intent (not JSON, a key written twice in one
object, not an object, another event type, `message` not an object, `data` not base64 text,
`attributes` not strings, `publishTime` without a zone) they say why in `Delivery.problem`.
`intent_from_delivery` raises only `InvalidIntentError`, for that problem or for a payload that is
not a valid intent (too large, nested too deeply, a key written twice in one object, numbers Python
cannot read, any validation error): each is the same on every delivery, so the entry point
records a dead letter and acks instead of having Pub/Sub deliver it again.

Payloads and push bodies are read by `execution.text.read_json`, the one reader of JSON from
outside (also of the log context's ids and of the command line's view of a dead letter).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import reprlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from execution.errors import InvalidIntentError
from execution.models import TradeIntent, validate_document_id
from execution.text import RepeatedKeyError, UnreadableJsonError, bounded_printable, read_json

PUBSUB_MESSAGE_PUBLISHED = "google.cloud.pubsub.topic.v1.messagePublished"
"""The only CloudEvent type `execute_intent` executes (a Pub/Sub trigger's)."""

MAX_INTENT_BYTES = 64 * 1024
"""A trade intent is a few hundred bytes (metadata at most 4 KiB): more is never an intent."""

MAX_INTENT_NESTING = 16
"""JSON levels an intent may have, metadata included (Firestore maps stop at 20)."""

OWN_DEAD_LETTER_PREFIX = "dl-"
"""The form of `Delivery.own_dead_letter_id`, which no message id is used as."""

_MAX_LABEL_CHARS = 256
_MAX_LOC_PART_CHARS = 64
_MAX_PROBLEM_VALUE_CHARS = 64


@dataclass(frozen=True)
class Delivery:
    """One Pub/Sub message as delivered: its id, publish time, raw data and attributes.

    `data` is the message data; where the envelope had none to give, the envelope itself as
    JSON, so a dead letter always keeps what arrived. `problem` says why the envelope can never
    carry an intent (None when it can).
    """

    message_id: str
    published_at: datetime | None
    data: bytes
    attributes: dict[str, str]
    problem: str | None = field(default=None)

    @property
    def dead_letter_id(self) -> str:
        """The dead letter's document id where no other message holds it: the message id where
        safe, else a hash of it or, for a message without one, `payload-` and a hash of the data.

        Pub/Sub ids are unique within a topic only, and nothing checks a pushed body's: a second,
        different message under the same id gets `own_dead_letter_id` instead. An id of that
        form (`dl-`) is never used as is, so no message can take another's second id.
        """
        if not self.message_id:
            return "payload-" + hashlib.sha256(self.data).hexdigest()
        try:
            safe = validate_document_id(self.message_id)
        except ValueError:
            safe = None
        if safe is not None and not safe.startswith(OWN_DEAD_LETTER_PREFIX):
            return safe
        raw = self.message_id.encode("utf-8", "surrogatepass")
        return "msg-" + hashlib.sha256(raw).hexdigest()

    @property
    def own_dead_letter_id(self) -> str:
        """A document id no other message can have: `dl-` and the `delivery_sha256`."""
        return OWN_DEAD_LETTER_PREFIX + self.delivery_sha256

    @property
    def delivery_sha256(self) -> str:
        """What tells this message from any other, whatever its id: the SHA-256 of its id,
        publish time, data and attributes (a redelivery carries the same four)."""
        identity = [
            self.message_id,
            self.published_at.isoformat() if self.published_at else None,
            hashlib.sha256(self.data).hexdigest(),
            sorted(self.attributes.items()),
        ]
        return hashlib.sha256(json.dumps(identity).encode("ascii")).hexdigest()

    @property
    def message_label(self) -> str:
        """The message id, bounded and printable, for logs and records (`message_label`)."""
        return message_label(self.message_id)


def message_label(message_id: str) -> str:
    """A message id as logs and dead letters hold it: bounded and printable, so valid UTF-8 of
    at most 1 kB (a query on it never meets Firestore's 1500-byte limit)."""
    return bounded_printable(message_id, _MAX_LABEL_CHARS)


def delivery_from_cloud_event(data: Any, event_type: Any = PUBSUB_MESSAGE_PUBLISHED) -> Delivery:
    """The Pub/Sub message in a CloudEvent's `data` (`{"message": {...}}`); never raises."""
    return _delivery(data, event_type, raw=None)


def delivery_from_push_body(body: bytes) -> Delivery:
    """The Pub/Sub message in a push subscription's raw request body; never raises.

    Any bytes: a body that is not JSON, or JSON of another shape than `{"message": {...}}`, is a
    Delivery whose `problem` says so and whose `data` is the body as it arrived.
    """
    try:
        envelope = read_json(body)
    except RepeatedKeyError as exc:
        return _undeliverable(body, f"the push body is ambiguous JSON: {exc}")
    except UnreadableJsonError as exc:
        shown = bounded_printable(str(exc), _MAX_PROBLEM_VALUE_CHARS)
        return _undeliverable(body, f"the push body is not readable JSON ({shown})")
    return _delivery(envelope, PUBSUB_MESSAGE_PUBLISHED, raw=body)


def _delivery(envelope: Any, event_type: Any, raw: bytes | None) -> Delivery:
    """The message of an envelope `{"message": {...}}`; `raw` is the envelope's bytes if known."""
    message = envelope.get("message") if isinstance(envelope, dict) else None
    if not isinstance(message, dict):
        shape = (
            f"its message is {_kind(message)}"
            if isinstance(envelope, dict)
            else f"it is {_kind(envelope)}"
        )
        return _undeliverable(
            _as_json_bytes(envelope) if raw is None else raw,
            f'the envelope must be {{"message": {{...}}}}; {shape}',
        )
    problems: list[str] = []
    if event_type != PUBSUB_MESSAGE_PUBLISHED:
        shown = bounded_printable(str(event_type), _MAX_LABEL_CHARS)
        problems.append(
            f"CloudEvent type {shown!r} is not {PUBSUB_MESSAGE_PUBLISHED!r}: "
            "execute_intent takes Pub/Sub messages only (check the function's trigger)"
        )
    payload = _message_data(message.get("data"), problems)
    return Delivery(
        message_id=_message_id(message, problems),
        published_at=_publish_time(_first(message, "publishTime", "publish_time"), problems),
        data=_as_json_bytes(message) if payload is None else payload,
        attributes=_attributes(message.get("attributes"), problems),
        problem="; ".join(problems) or None,
    )


def _undeliverable(data: bytes, problem: str) -> Delivery:
    """A delivery with no message to read: `data` is what arrived, kept for the dead letter."""
    return Delivery(message_id="", published_at=None, data=data, attributes={}, problem=problem)


def intent_from_delivery(delivery: Delivery) -> TradeIntent:
    """The delivery's trade intent; `InvalidIntentError` says why there can never be one."""
    if delivery.problem:
        raise InvalidIntentError(delivery.problem)
    return parse_intent(delivery.data)


def parse_intent(data: bytes) -> TradeIntent:
    """Validate the message data as a trade intent; `InvalidIntentError` names what is wrong."""
    if not data:
        raise InvalidIntentError("empty message: publish a JSON trade intent")
    if len(data) > MAX_INTENT_BYTES:
        raise InvalidIntentError(
            f"message data is {len(data)} bytes; a trade intent has at most {MAX_INTENT_BYTES}"
        )
    document = _json_document(data)
    if not isinstance(document, dict):
        raise InvalidIntentError(f"expected a JSON object, got {type(document).__name__}")
    try:
        return TradeIntent.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(_problem(err) for err in exc.errors())
        raise InvalidIntentError(f"invalid trade intent: {problems}") from exc
    except Exception as exc:
        # Validation is pure: whatever it raises, it raises on every delivery. A bug of ours
        # surfaces in the dead letter's reason instead of looping through Pub/Sub.
        raise InvalidIntentError(f"unvalidatable trade intent: {type(exc).__name__}") from exc


def _json_document(data: bytes) -> Any:
    try:
        document = read_json(data)
    except UnreadableJsonError as exc:
        raise InvalidIntentError(str(exc)) from exc
    if _nesting(document) > MAX_INTENT_NESTING:
        raise InvalidIntentError(
            f"JSON nested too deeply: a trade intent has at most {MAX_INTENT_NESTING} levels"
        )
    try:
        # JSON may escape a lone surrogate (\ud800) that no store or log accepts as text.
        json.dumps(document, ensure_ascii=False).encode()
    except UnicodeEncodeError as exc:
        raise InvalidIntentError("text with a lone surrogate escape is not Unicode") from exc
    return document


def _nesting(document: Any) -> int:
    """How many levels of objects and arrays `document` has, counted up to one past the bound.

    Iterative, so no depth can exhaust the interpreter's recursion limit.
    """
    deepest, stack = 0, [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            deepest = max(deepest, depth)
            if depth <= MAX_INTENT_NESTING:
                stack.extend((child, depth + 1) for child in value)
    return deepest


def _problem(error: ErrorDetails) -> str:
    """One validation error as `field: message`, naming what was sent where the type is wrong."""
    parts = (bounded_printable(str(part), _MAX_LOC_PART_CHARS) for part in error["loc"])
    problem = f"{'.'.join(parts) or 'intent'}: {error['msg']}"
    if error["type"].endswith("_type"):  # e.g. qty "7": say that a string was sent
        problem += f" (got {_kind(error.get('input'))})"
    return problem


def _message_data(raw: Any, problems: list[str]) -> bytes | None:
    """The message's data bytes; None (and a problem) when `data` is not text."""
    if raw is None or raw == "":
        return b""
    if not isinstance(raw, str):
        problems.append(f"message.data must be base64 text, not {_kind(raw)}")
        return None
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        # Not base64: keep the text as sent, which then fails (or passes) as a payload.
        return raw.encode("utf-8", "surrogatepass")


def _message_id(message: dict[str, Any], problems: list[str]) -> str:
    raw = _first(message, "messageId", "message_id")
    if raw is None or isinstance(raw, str):
        return raw or ""
    if isinstance(raw, int) and not isinstance(raw, bool):
        return str(raw)
    problems.append(f"messageId must be a string, not {_kind(raw)}")
    return ""


def _publish_time(raw: Any, problems: list[str]) -> datetime | None:
    if raw is None or raw == "":
        return None
    shown = bounded_printable(str(raw), _MAX_PROBLEM_VALUE_CHARS)
    try:
        parsed = (
            datetime.fromisoformat(raw.replace("Z", "+00:00")) if isinstance(raw, str) else None
        )
        if parsed is not None and parsed.tzinfo is not None:
            return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        pass
    problems.append(f"publishTime {shown!r} is not an RFC 3339 time with a zone")
    return None


def _attributes(raw: Any, problems: list[str]) -> dict[str, str]:
    if raw is None:
        return {}
    if isinstance(raw, dict) and all(isinstance(v, str) for v in raw.values()):
        return {str(k): v for k, v in raw.items()}
    problems.append(f"message.attributes must map names to strings, not {_kind(raw)}")
    return {}


def _first(message: dict[str, Any], *names: str) -> Any:
    return next((message[name] for name in names if message.get(name) is not None), None)


_JSON_KINDS = {str: "a string", int: "a number", float: "a number", bool: "a boolean"}


def _kind(value: Any) -> str:
    """How a JSON value reads to the publisher: `absent`, `a string`, `an array`, ..."""
    if value is None:
        return "absent"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return _JSON_KINDS.get(type(value), f"a {type(value).__name__}")


def _as_json_bytes(value: Any) -> bytes:
    """`value` as JSON (what arrived, for the dead letter); a bounded repr if it cannot be."""
    try:
        return json.dumps(value, default=repr).encode()
    except (RecursionError, ValueError, TypeError):
        return reprlib.repr(value).encode("utf-8", "backslashreplace")
