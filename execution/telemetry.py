"""Structured JSON logs in Cloud Logging's format, with stable event names.

Every record the domain writes goes through `emit(logger, event, severity, **fields)`: the event
(`exec.reservation.released`, ...) is the message and the fields ride in `record.fields`, so tests
assert on captured records and Cloud Logging indexes `jsonPayload.event`.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

_SEVERITY = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "CRITICAL",
}


def emit(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log `event` with structured `fields` (never secrets)."""
    logger.log(level, event, extra={"event": event, "fields": fields})


class JsonFormatter(logging.Formatter):
    """One JSON object per line with `severity`, `message`, `event` and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelno, record.levelname),
            "message": record.getMessage(),
            "logger": record.name,
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
        }
        event = getattr(record, "event", None)
        if event:
            payload["event"] = event
        payload.update(getattr(record, "fields", {}))
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure_logging(level: int = logging.INFO) -> None:
    """Send the `execution` loggers to stdout as JSON lines (idempotent)."""
    root = logging.getLogger("execution")
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
