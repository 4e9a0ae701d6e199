"""The JSON lines Cloud Logging and Error Reporting read: stack traces, source, bound context."""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from execution.telemetry import (
    ERROR_EVENT_TYPE,
    SOURCE_FIELD,
    JsonFormatter,
    emit,
    intent_ids_of,
    log_context,
    parse_cloud_trace_context,
    parse_traceparent,
)


class Lines:
    """The JSON lines a logger wrote, parsed."""

    def __init__(self, stream: io.StringIO) -> None:
        self._stream = stream

    def all(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self._stream.getvalue().splitlines()]


@pytest.fixture
def logger(request: pytest.FixtureRequest) -> Iterator[tuple[logging.Logger, Lines]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(project="demo-logs", service="execute-intent"))
    log = logging.getLogger(f"execution.test.{request.node.name}")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    yield log, Lines(stream)
    log.removeHandler(handler)


def fail_deep_inside() -> None:
    raise RuntimeError("the store said no")


def test_an_error_logged_while_handling_an_exception_carries_its_stack_trace_for_error_reporting(
    logger: tuple[logging.Logger, Lines],
) -> None:
    log, lines = logger
    try:
        fail_deep_inside()
    except RuntimeError:
        emit(log, "exec.reservation.release_failed", logging.ERROR, lease_id="l-1")

    [line] = lines.all()
    assert line["@type"] == ERROR_EVENT_TYPE
    assert line["stack_trace"].startswith("Traceback (most recent call last):")
    assert "in fail_deep_inside" in line["stack_trace"]
    assert line["stack_trace"].rstrip().endswith("RuntimeError: the store said no")
    assert line["serviceContext"] == {"service": "execute-intent"}
    assert (line["severity"], line["event"], line["lease_id"]) == (
        "ERROR",
        "exec.reservation.release_failed",
        "l-1",
    )


def test_a_warning_while_handling_an_exception_is_not_reported_as_an_error(
    logger: tuple[logging.Logger, Lines],
) -> None:
    log, lines = logger
    try:
        fail_deep_inside()
    except RuntimeError:
        emit(log, "exec.delivery.retry", logging.WARNING)

    [line] = lines.all()
    assert "@type" not in line and "stack_trace" not in line


def test_an_error_outside_an_exception_has_no_stack_trace(
    logger: tuple[logging.Logger, Lines],
) -> None:
    log, lines = logger

    emit(log, "exec.intent.outlived_lease", logging.ERROR)

    [line] = lines.all()
    assert "@type" not in line and "stack_trace" not in line


def test_the_source_location_is_the_line_that_emitted_not_the_emit_helper(
    logger: tuple[logging.Logger, Lines],
) -> None:
    log, lines = logger

    emit(log, "exec.sweep.completed")

    [line] = lines.all()
    assert line[SOURCE_FIELD]["file"] == __file__
    assert line[SOURCE_FIELD]["function"] == (
        "test_the_source_location_is_the_line_that_emitted_not_the_emit_helper"
    )


def test_bound_ids_ride_on_every_line_inside_the_block_and_on_none_after(
    logger: tuple[logging.Logger, Lines],
) -> None:
    log, lines = logger

    with log_context(tenant_id="t-1", client_intent_id="i-1", trace_id="a" * 32, span_id=None):
        emit(log, "exec.reservation.acquired")
        emit(log, "exec.intent.completed", outcome="placed")
    emit(log, "exec.sweep.completed")

    inside_1, inside_2, after = lines.all()
    for line in (inside_1, inside_2):
        assert (line["tenant_id"], line["client_intent_id"]) == ("t-1", "i-1")
        assert line["logging.googleapis.com/trace"] == f"projects/demo-logs/traces/{'a' * 32}"
        assert "logging.googleapis.com/spanId" not in line
    assert "tenant_id" not in after and "logging.googleapis.com/trace" not in after


def test_trace_headers_are_read_in_both_forms_and_malformed_ones_are_ignored() -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"

    w3c = parse_traceparent(f"00-{trace}-00f067aa0ba902b7-01")
    cloud = parse_cloud_trace_context(f"{trace.upper()}/1;o=0")

    assert w3c is not None and (w3c.trace_id, w3c.span_id, w3c.sampled) == (
        trace,
        "00f067aa0ba902b7",
        True,
    )
    assert cloud is not None and (cloud.trace_id, cloud.span_id, cloud.sampled) == (
        trace,
        "0000000000000001",
        False,
    )
    assert parse_traceparent(f"00-{'0' * 32}-00f067aa0ba902b7-01") is None
    assert parse_traceparent("garbage") is None
    assert parse_cloud_trace_context("not/a;trace") is None


def test_only_values_in_the_ids_alphabet_are_bound_from_a_raw_payload() -> None:
    document = {
        "tenant_id": "tenant-1",
        "broker_account_id": "acct\nforged",
        "client_intent_id": "x" * 129,
    }
    data = {"message": {"messageId": "42", "data": base64.b64encode(json.dumps(document).encode())}}

    assert intent_ids_of(data) == {"message_id": "42", "tenant_id": "tenant-1"}
