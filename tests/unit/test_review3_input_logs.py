"""Third review: every log line is one strict JSON object, whatever its fields hold.

Cloud Logging reads a line that is not JSON as plain text: severity, event and trace are lost,
and an alert on `jsonPayload.event` misses it. A formatter that raises loses the record.
"""

from __future__ import annotations

import io
import json
import logging
import math
from collections.abc import Iterator
from typing import Any

import pytest

from execution.telemetry import JsonFormatter, emit


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text")


def _refuse(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("execution.review3")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)


HOSTILE_FIELDS = {
    "NaN": math.nan,
    "Infinity": math.inf,
    "-Infinity in a list": [-math.inf],
    "a key that is no string": {(1, 2): 3},
    "a value whose str fails": Unprintable(),
    "a lone surrogate": "\ud800",
    "nested past the recursion limit": [],
}


@pytest.mark.parametrize("label", list(HOSTILE_FIELDS))
def test_a_log_line_is_strict_json_with_its_severity_and_event_whatever_a_field_holds(
    lines: io.StringIO, label: str
) -> None:
    value = HOSTILE_FIELDS[label]
    if label.startswith("nested"):
        for _ in range(5000):
            value = [value]

    emit(logging.getLogger("execution.review3"), "exec.review3.hostile", logging.WARNING, x=value)

    [line] = lines.getvalue().splitlines()
    record = json.loads(line, parse_constant=_refuse)
    assert (record["severity"], record["event"]) == ("WARNING", "exec.review3.hostile")
