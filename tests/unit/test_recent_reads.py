"""`RecentReads`: a shared document read is reused only while younger than the bound."""

from __future__ import annotations

import pytest

from execution.firestore import recent_reads
from execution.firestore.recent_reads import RecentReads


class Ticks:
    """Monotonic seconds moved by hand."""

    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_a_read_is_answered_until_it_is_as_old_as_the_bound() -> None:
    ticks = Ticks()
    reads = RecentReads(max_age_seconds=1.0, monotonic=ticks)
    reads.keep("ops/execution_kill_switch", {"enabled": False}, read_at=ticks.now)

    ticks.now += 0.99
    young = reads.get("ops/execution_kill_switch")
    ticks.now += 0.01
    old = reads.get("ops/execution_kill_switch")

    assert young is not None and young.data == {"enabled": False}
    assert old is None


def test_a_missing_document_is_kept_as_missing_not_as_unread() -> None:
    ticks = Ticks()
    reads = RecentReads(max_age_seconds=1.0, monotonic=ticks)
    reads.keep("market_quotes/AAPL", None, read_at=ticks.now)

    kept = reads.get("market_quotes/AAPL")

    assert kept is not None and kept.data is None
    assert reads.get("market_quotes/MSFT") is None


def test_a_zero_bound_never_answers() -> None:
    ticks = Ticks()
    reads = RecentReads(max_age_seconds=0.0, monotonic=ticks)
    reads.keep("ops/execution_kill_switch", {"enabled": True}, read_at=ticks.now)

    assert reads.get("ops/execution_kill_switch") is None


def test_past_the_size_cap_old_reads_are_dropped_and_young_ones_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(recent_reads, "MAX_KEPT", 3)
    ticks = Ticks()
    reads = RecentReads(max_age_seconds=1.0, monotonic=ticks)
    for symbol in ("A", "B", "C"):
        reads.keep(f"market_quotes/{symbol}", {}, read_at=ticks.now)
    ticks.now += 2
    reads.keep("market_quotes/D", {}, read_at=ticks.now)

    assert reads.get("market_quotes/D") is not None
    assert len(reads._reads) == 1  # A, B and C were old: dropped, not kept forever
