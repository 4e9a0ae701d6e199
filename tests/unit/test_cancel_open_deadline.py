"""`kill-switch on --cancel-open` ends by its deadline against a broker whose listing never ends."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from execution.cli.cancel_open import Scope, cancel_open_orders
from execution.client_order_ids import client_order_id_for
from execution.models import BrokerOrder

SINCE = datetime(2026, 12, 1, tzinfo=UTC)


class EndlessBroker:
    """Lists closed orders of ours without end (it keeps inventing pages); cancels nothing."""

    def list_orders(self, *, after: datetime, until: datetime | None = None) -> Iterator[Any]:
        for n in itertools.count():
            coid = client_order_id_for("t", "a", f"intent-{n}")
            yield BrokerOrder(f"o-{n}", coid, "AAPL", "buy", 1.0, "filled")


def test_a_listing_that_never_ends_leaves_an_incomplete_report_at_the_deadline() -> None:
    ticks = itertools.count()

    report = cancel_open_orders(
        EndlessBroker(),  # type: ignore[arg-type]  # only the listing is called
        Scope("t"),
        since=SINCE,
        owner_of=lambda coid: ("t", "a"),
        deadline_seconds=100.0,
        monotonic=lambda: float(next(ticks)),
    )

    assert not report.complete and report.problems
    assert "deadline" in (report.error or "")
