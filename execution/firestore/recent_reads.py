"""`RecentReads`: documents every invocation of an instance reads alike, reused for a bounded time.

The kill switches and a symbol's quote are the same for every intent of a tenant; reading them
for each intent costs a document read (billed) and client CPU per intent. An instance keeps the
last read of each for at most `max_age_seconds` (SHARED_READ_MAX_AGE_SECONDS, 1 s by default), so
a switch flipped on halts every intent that reaches the authority more than that long after.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAX_KEPT = 4096
"""Past this many documents (symbols x tenants), reads older than the bound are dropped."""


@dataclass(frozen=True)
class KeptRead:
    """A document's fields (None: it did not exist) and when they were read (monotonic s)."""

    data: dict[str, Any] | None
    read_at: float


class RecentReads:
    """Thread-safe map of document path to its last read, answered only while it is young."""

    def __init__(self, *, max_age_seconds: float, monotonic: Callable[[], float]) -> None:
        self._max_age_seconds = max_age_seconds
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._reads: dict[str, KeptRead] = {}

    def young(self, read_at: float) -> bool:
        """Whether a read made at `read_at` may still be used (never, with a bound of 0)."""
        return self._monotonic() - read_at < self._max_age_seconds

    def get(self, path: str) -> KeptRead | None:
        """The last read of `path`, if it is young enough to use."""
        with self._lock:
            kept = self._reads.get(path)
        return kept if kept is not None and self.young(kept.read_at) else None

    def keep(self, path: str, data: dict[str, Any] | None, read_at: float) -> KeptRead:
        """Remember a read of `path` made at `read_at`; returns it."""
        kept = KeptRead(data, read_at)
        with self._lock:
            self._reads[path] = kept
            if len(self._reads) > MAX_KEPT:
                self._reads = {p: r for p, r in self._reads.items() if self.young(r.read_at)}
        return kept
