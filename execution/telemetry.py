"""Structured JSON logs in Cloud Logging's format, with stable event names and request context.

Every record the domain writes goes through `emit(logger, event, severity, **fields)`: the event
(`exec.reservation.released`, ...) is the message and the fields ride in `record.fields`, so tests
assert on captured records and Cloud Logging indexes `jsonPayload.event`.

One invocation's lines share a context bound once, around the call, by `invocation_logging`
(the decorator on `main.py`'s entry points): the request's trace and span
(`logging.googleapis.com/trace`, `logging.googleapis.com/spanId`, from `traceparent`,
`X-Cloud-Trace-Context` or the CloudEvent's `traceparent` extension), the execution id, and the
intent's ids (tenant_id, broker_account_id, client_intent_id, message_id). A `ContextVar` holds
it, so code deeper down never passes ids by hand. An ERROR logged while an exception is being
handled carries its stack trace as Error Reporting's `ReportedErrorEvent`.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import math
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, NamedTuple, TypeVar, cast

from execution.text import read_json

_SEVERITY = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "CRITICAL",
}

TRACE_FIELD = "logging.googleapis.com/trace"
SPAN_FIELD = "logging.googleapis.com/spanId"
SAMPLED_FIELD = "logging.googleapis.com/trace_sampled"
SOURCE_FIELD = "logging.googleapis.com/sourceLocation"
ERROR_EVENT_TYPE = (
    "type.googleapis.com/google.devtools.clouderrorreporting.v1beta1.ReportedErrorEvent"
)

INTENT_ID_FIELDS = ("tenant_id", "broker_account_id", "client_intent_id")
"""The intent's ids bound on every line of its invocation (with `message_id`)."""
_BOUND_ID = r"[A-Za-z0-9_.-]{1,128}"  # the contract's id alphabet: anything else is not an id

_context: ContextVar[Mapping[str, Any]] = ContextVar(
    "execution_log_context", default=MappingProxyType({})
)


def emit(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log `event` with structured `fields` (never secrets).

    At ERROR and above, inside an `except` block, the exception being handled is attached, so
    its stack trace reaches Error Reporting without each caller asking for it.
    """
    exc_info = level >= logging.ERROR and sys.exc_info()[0] is not None
    # stacklevel 2: the record's source location is the caller, not this function.
    logger.log(
        level, event, extra={"event": event, "fields": fields}, exc_info=exc_info, stacklevel=2
    )


# -- the invocation's context ------------------------------------------------------------------


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add `fields` (None values left out) to every record logged inside the block."""
    bound = {key: value for key, value in fields.items() if value is not None}
    token = _context.set({**_context.get(), **bound})
    try:
        yield
    finally:
        _context.reset(token)


def bound_fields() -> Mapping[str, Any]:
    """The fields bound to the current context."""
    return _context.get()


class TraceContext(NamedTuple):
    """A request's trace id (32 hex), span id (16 hex) and sampling decision."""

    trace_id: str
    span_id: str | None
    sampled: bool


# Patterns, not compiled ones: `re` compiles them on first use, off the cold-start path.
_TRACEPARENT = r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$"
_CLOUD_TRACE = r"^([0-9a-fA-F]{32})(?:/(\d{1,20}))?(?:;o=([01]))?$"


def parse_traceparent(value: str | None) -> TraceContext | None:
    """W3C `traceparent` (`00-TRACE-SPAN-FLAGS`), or None when absent or malformed."""
    match = re.match(_TRACEPARENT, (value or "").strip().lower())
    if match is None or set(match.group(1)) == {"0"}:
        return None
    trace_id, span_id, flags = match.groups()
    return TraceContext(trace_id, span_id, bool(int(flags, 16) & 1))


def parse_cloud_trace_context(value: str | None) -> TraceContext | None:
    """`X-Cloud-Trace-Context` (`TRACE/SPAN_DECIMAL;o=1`), or None when absent or malformed."""
    match = re.match(_CLOUD_TRACE, (value or "").strip())
    if match is None:
        return None
    trace_id, span, sampled = match.groups()
    span_id = None
    if span is not None and 0 < int(span) < 2**64:
        span_id = f"{int(span):016x}"  # Cloud Logging wants the span id as 16 hex digits
    return TraceContext(trace_id.lower(), span_id, sampled == "1")


def trace_of(headers: Mapping[str, str], extensions: Mapping[str, Any]) -> TraceContext | None:
    """The request's trace: `traceparent`, else `X-Cloud-Trace-Context`, else the CloudEvent's
    `traceparent` extension."""
    return (
        parse_traceparent(headers.get("traceparent"))
        or parse_cloud_trace_context(headers.get("X-Cloud-Trace-Context"))
        or parse_traceparent(_text(extensions.get("traceparent")))
    )


_MAX_ID_SCAN_CHARS = 96 * 1024
"""Base64 of the intake's largest intent (64 KiB): a larger payload is dead-lettered anyway."""


def intent_ids_of(event_data: Any) -> dict[str, str]:
    """The Pub/Sub message id and the intent's ids from a CloudEvent's `data`, best effort.

    Read before validation, so even a payload that is later dead-lettered is found by its ids;
    only values in the ids' alphabet are taken, and anything unreadable is simply left out.
    """
    message = event_data.get("message") if isinstance(event_data, dict) else None
    if not isinstance(message, dict):
        return {}
    ids = {"message_id": message.get("messageId") or message.get("message_id")}
    data = message.get("data") or ""
    try:
        # Bounded, like the intake, and read by its reader: the ids bound are those the intake
        # reads, never the last of a repeated key or the ids of a payload it cannot read.
        raw = base64.b64decode(data, validate=True) if len(data) <= _MAX_ID_SCAN_CHARS else b""
        document = read_json(raw) if raw else None
    except (binascii.Error, ValueError, TypeError):  # UnreadableJsonError is a ValueError
        document = None
    if isinstance(document, dict):
        ids.update({name: document.get(name) for name in INTENT_ID_FIELDS})
    return {
        name: value
        for name, value in ids.items()
        if isinstance(value, str) and re.fullmatch(_BOUND_ID, value)
    }


F = TypeVar("F", bound=Callable[..., Any])


def invocation_logging(entry_point: F) -> F:
    """Bind the request's trace, execution id and intent ids around an entry point's call.

    Put it under functions-framework's decorator. The argument is a `flask.Request` (HTTP) or a
    `CloudEvent`; a CloudEvent's HTTP headers are read from Flask's current request.
    """

    @functools.wraps(entry_point)
    def wrapper(request_or_event: Any) -> Any:
        try:
            fields = invocation_fields(request_or_event)
        except Exception:  # hostile input must reach the entry point, which answers all input
            fields = {}
        with log_context(**fields):
            return entry_point(request_or_event)

    return wrapper  # type: ignore[return-value]


def invocation_fields(request_or_event: Any) -> dict[str, Any]:
    """What `invocation_logging` binds for one call."""
    headers = _request_headers(request_or_event)
    extensions: Mapping[str, Any] = {}
    fields: dict[str, Any] = {}
    get_attributes = getattr(request_or_event, "get_attributes", None)
    if callable(get_attributes):  # a CloudEvent
        extensions = get_attributes()
        fields.update(intent_ids_of(getattr(request_or_event, "data", None)))
    else:  # an HTTP request: a Pub/Sub push body holds the same envelope as a CloudEvent
        fields.update(intent_ids_of(_json_body(request_or_event)))
    trace = trace_of(headers, extensions)
    fields["execution_id"] = _text(headers.get("Function-Execution-Id"))
    if trace is not None:
        fields.update(trace_id=trace.trace_id, span_id=trace.span_id, trace_sampled=trace.sampled)
    return fields


def _json_body(request: Any) -> Any:
    """The request's body as the intake reads it (`read_json`), or None where it cannot: an
    envelope the intake refuses (a key written twice, NaN) binds no ids from either reading."""
    get_data = getattr(request, "get_data", None)
    try:
        return read_json(get_data()) if callable(get_data) else None
    except ValueError:  # UnreadableJsonError
        return None


def _request_headers(request_or_event: Any) -> Mapping[str, str]:
    headers = getattr(request_or_event, "headers", None)
    if headers is not None:
        return headers  # type: ignore[no-any-return]
    import flask  # already loaded by functions-framework when an entry point runs

    # Werkzeug's Headers answers `.get` as a mapping does.
    return cast("Mapping[str, str]", flask.request.headers) if flask.has_request_context() else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


# -- the JSON line -------------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per line in Cloud Logging's structured form.

    `severity`, `message`, `event`, the bound context and the event's fields; the trace as
    `projects/PROJECT/traces/ID` (when the project is known), the span, `sourceLocation`; and,
    for an ERROR with an exception, the stack trace as Error Reporting's `ReportedErrorEvent`.
    """

    def __init__(self, project: str | None = None, service: str | None = None) -> None:
        super().__init__()
        self.project = project
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelno, record.levelname),
            "message": record.getMessage(),
            "logger": record.name,
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            SOURCE_FIELD: {
                "file": record.pathname,
                "line": str(record.lineno),
                "function": record.funcName,
            },
        }
        event = getattr(record, "event", None)
        if event:
            payload["event"] = event
        context = dict(_context.get())
        self._add_trace(payload, context)
        payload.update(context)
        payload.update(getattr(record, "fields", {}))
        if record.exc_info:
            self._add_exception(payload, record)
        return _json_line(payload)

    def _add_trace(self, payload: dict[str, Any], context: dict[str, Any]) -> None:
        trace_id = context.pop("trace_id", None)
        span_id = context.pop("span_id", None)
        sampled = context.pop("trace_sampled", None)
        if trace_id is None:
            return
        payload["trace_id"] = trace_id
        if self.project:
            payload[TRACE_FIELD] = f"projects/{self.project}/traces/{trace_id}"
        if span_id:
            payload[SPAN_FIELD] = span_id
        if sampled is not None:
            payload[SAMPLED_FIELD] = sampled

    def _add_exception(self, payload: dict[str, Any], record: logging.LogRecord) -> None:
        stack_trace = self.formatException(record.exc_info)  # type: ignore[arg-type]
        payload["stack_trace"] = stack_trace
        if record.levelno >= logging.ERROR:
            # Error Reporting groups ERROR entries of this type by their stack trace.
            payload["@type"] = ERROR_EVENT_TYPE
            if self.service:
                payload["serviceContext"] = {"service": self.service}


def _json_line(payload: dict[str, Any]) -> str:
    """`payload` as one strict JSON object (RFC 8259), whatever its fields hold.

    Cloud Logging reads a line that is not JSON as text: its severity, event and trace are lost,
    so an alert on them misses it. `json.dumps` alone writes `NaN`/`Infinity` (not JSON) and
    raises on a key that is no string or a value whose `str` fails, and a raise in a formatter
    loses the record. Non-finite numbers become strings, keys strings, other values their `str`
    (else their type's name).
    """
    try:
        return json.dumps(_json_safe(payload), allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        kept = {k: payload.get(k) for k in ("severity", "message", "event", "time")}
        return json.dumps({**_json_safe(kept), "log_error": "fields not serialisable"})


def _json_safe(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str | bool | int) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth > 20:
        return "..."
    if isinstance(value, Mapping):
        return {_text_of(key): _json_safe(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item, depth + 1) for item in value]
    return _text_of(value)


def _text_of(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return str(value)
    except Exception:  # a value whose __str__ fails must not lose the line
        return f"<{type(value).__name__}>"


def configure_logging(
    level: int = logging.INFO, *, environ: Mapping[str, str] | None = None
) -> None:
    """Send the `execution` loggers to stdout as JSON lines (idempotent).

    The project of the trace field is GOOGLE_CLOUD_PROJECT; the service Error Reporting names
    is K_SERVICE (set by Cloud Run functions).
    """
    env = os.environ if environ is None else environ
    root = logging.getLogger("execution")
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        JsonFormatter(
            project=env.get("GOOGLE_CLOUD_PROJECT") or env.get("GCLOUD_PROJECT") or None,
            service=env.get("K_SERVICE") or None,
        )
    )
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
