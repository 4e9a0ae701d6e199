"""Cloud Functions entry points (contract): `execute_intent` (Pub/Sub) and `sweep_reservations`.

Thin by design: decode, validate, call the service built once per instance, and map the answer to
ack (return) or retry (raise). `import main` needs no network, credentials or emulator.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import flask
import functions_framework
from cloudevents.http import CloudEvent

from execution.bootstrap import Service, bootstrap
from execution.errors import PermanentError, RetryableError
from execution.intake import delivery_from_cloud_event, parse_intent
from execution.settings import Settings
from execution.telemetry import configure_logging, emit, invocation_logging

logger = logging.getLogger("execution.main")

_service: Service | None = None
_service_lock = threading.Lock()


def _get_service() -> Service:
    """Build the service on first use, once per instance; warm invocations reuse its clients."""
    global _service
    if _service is None:
        with _service_lock:
            if _service is None:
                configure_logging()
                _service = bootstrap(Settings.from_env())
    return _service


@functions_framework.cloud_event
@invocation_logging
def execute_intent(cloud_event: CloudEvent) -> None:
    """Execute one trade intent; return to ack, raise to have Pub/Sub deliver it again."""
    service = _get_service()
    delivery = delivery_from_cloud_event(cloud_event.data)
    emit(logger, "exec.delivery.received", message_id=delivery.message_id)
    try:
        intent = parse_intent(delivery.data)
        result = service.engine.execute_intent(intent, published_at=delivery.published_at)
    except RetryableError as exc:
        emit(
            logger,
            "exec.delivery.retry",
            logging.WARNING,
            message_id=delivery.message_id,
            error=f"{type(exc).__name__}: {exc}",
        )
        raise
    except PermanentError as exc:
        # Never valid however often delivered: record why (a store outage here raises, so
        # the message is retried rather than lost), then ack.
        service.dead_letters.record(delivery, f"{type(exc).__name__}: {exc}")
        emit(
            logger,
            "exec.delivery.dead_lettered",
            logging.WARNING,
            message_id=delivery.message_id,
            reason=str(exc),
        )
        return
    emit(
        logger,
        "exec.delivery.acked",
        message_id=delivery.message_id,
        client_intent_id=result.client_intent_id,
        outcome=result.outcome.value,
        recorded_outcome=result.recorded_outcome.value if result.recorded_outcome else None,
        attempt=result.attempt,
        reason=result.reason,
        broker_order_id=result.broker_order_id,
    )


@functions_framework.http
@invocation_logging
def sweep_reservations(request: flask.Request) -> tuple[str, int, dict[str, Any]]:
    """Expire lapsed reservations (Cloud Scheduler, HTTP POST); answers the JSON report."""
    return _scheduled(request, lambda service: service.sweeper.sweep().as_dict())


@functions_framework.http
@invocation_logging
def reconcile_orders(request: flask.Request) -> tuple[str, int, dict[str, Any]]:
    """Compare the broker's recent orders with the records (Cloud Scheduler, HTTP POST)."""
    return _scheduled(request, lambda service: service.reconciler.reconcile().as_dict())


def _scheduled(
    request: flask.Request, run: Callable[[Service], dict[str, Any]]
) -> tuple[str, int, dict[str, Any]]:
    """A scheduled job: POST only; answers its JSON report."""
    headers = {"Content-Type": "application/json"}
    if request.method != "POST":
        return json.dumps({"error": "use POST"}), 405, {**headers, "Allow": "POST"}
    return json.dumps(run(_get_service())), 200, headers
