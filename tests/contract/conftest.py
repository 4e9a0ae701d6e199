"""What the contract tests share: a stopped clock and an Alpaca sandbox that reads it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from devtools.alpaca_sandbox import AlpacaSandbox
from execution.clock import FakeClock

T0 = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
"""Where every contract test's clock starts."""


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def sandbox(clock: FakeClock) -> Iterator[AlpacaSandbox]:
    """The sandbox, stamping orders with `clock`'s time (tests control `submitted_at`)."""
    with AlpacaSandbox(clock=clock) as server:
        yield server
