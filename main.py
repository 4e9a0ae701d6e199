"""Cloud Functions entry points (contract): `execute_intent` (Pub/Sub through Eventarc),
`execute_intent_push` (a Pub/Sub push subscription), `sweep_reservations` and `reconcile_orders`
(Cloud Scheduler).

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
from execution.dead_letters import MAX_REASON_CHARS
from execution.errors import PermanentError, RetryableError
from execution.intake import (
    Delivery,
    delivery_from_cloud_event,
    delivery_from_push_body,
    intent_from_delivery,
)
from execution.settings import Settings
from execution.telemetry import configure_logging, emit, invocation_logging
from execution.text import bounded_printable

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
    """Execute one trade intent (Eventarc); return to ack, raise to have it delivered again."""
    delivery = delivery_from_cloud_event(cloud_event.data, cloud_event.get("type"))
    answer_delivery(_get_service(), delivery)


@functions_framework.http
@invocation_logging
def execute_intent_push(request: flask.Request) -> tuple[str, int, dict[str, str]]:
    """Execute one trade intent from a push subscription's body; 200 acks, a raise retries.

    An HTTP function, so that functions-framework never judges the body: whatever a push
    carries (not JSON, an array, `message` text, no `messageId`, no `data`) reaches our intake.
    """
    if request.method != "POST":
        return "use POST", 405, {"Allow": "POST"}
    answer_delivery(_get_service(), delivery_from_push_body(request.get_data()))
    return "OK", 200, {}


def answer_delivery(service: Service, delivery: Delivery) -> None:
    """Execute the delivery's intent or dead-letter it; raises only `RetryableError` on purpose.

    Any input is answered: what can never be an intent (a broken envelope, another event type, a
    bad payload) is recorded with its reason and acked; only a store outage while recording it,
    or a retryable stage of the engine, asks Pub/Sub for another delivery.
    """
    emit(logger, "exec.delivery.received", message_id=delivery.message_label)
    try:
        intent = intent_from_delivery(delivery)
        result = service.engine.execute_intent(intent, published_at=delivery.published_at)
    except RetryableError as exc:
        emit(
            logger,
            "exec.delivery.retry",
            logging.WARNING,
            message_id=delivery.message_label,
            error=f"{type(exc).__name__}: {exc}",
        )
        raise
    except PermanentError as exc:
        # Never valid however often delivered: record why (a store outage here raises, so
        # the message is retried rather than lost), then ack.
        reason = bounded_printable(f"{type(exc).__name__}: {exc}", MAX_REASON_CHARS)
        letter_id = service.dead_letters.record(delivery, reason)
        emit(
            logger,
            "exec.delivery.dead_lettered",
            logging.WARNING,
            message_id=delivery.message_label,
            dead_letter_id=letter_id,
            reason=reason,
        )
        return
    emit(
        logger,
        "exec.delivery.acked",
        message_id=delivery.message_label,
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
