"""A Firestore client whose calls go round-robin over several gRPC channels, one call at a time.

The candidate the concurrency cell measures against one client (`bench.concurrency`): several
requests served at once by one instance share one client, and a gRPC channel completes its calls
on one lock and one polling thread, which concurrent threads then queue on; with `size` channels
they queue on `size`. It is not in `execution.bootstrap`: on the figures in docs/BENCHMARKS.md
it did not win at the deployed concurrency. Every adapter keeps using
one `firestore.Client`: only the client's GAPIC layer (`_firestore_api`, where each RPC goes
through) is replaced by one that hands each call to the next of `size` GAPIC clients, each built
by its own `firestore.Client` exactly as the library builds it (emulator or production channel,
credentials, options). A transaction's calls may go through different channels: its id is the
server's, not the channel's.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

from google.cloud import firestore

MAX_CHANNELS = 16


def pooled_client(project: str | None, size: int) -> firestore.Client:
    """A `firestore.Client` for `project` whose RPCs go round-robin over `size` channels."""
    if not 1 <= size <= MAX_CHANNELS:
        raise ValueError(f"a client pool has 1 to {MAX_CHANNELS} channels, not {size}")
    client = firestore.Client(project=project)
    if size == 1:
        return client
    others = [firestore.Client(project=project) for _ in range(size - 1)]
    apis = [member._firestore_api for member in (client, *others)]
    # The library builds `_firestore_api` lazily into this attribute and reuses it from then on.
    client._firestore_api_internal = RoundRobinApi(apis)
    return client


class RoundRobinApi:
    """Stands in for a GAPIC `FirestoreClient`: each RPC method call goes to the next one."""

    def __init__(self, apis: list[Any]) -> None:
        self.apis = apis
        self._turns = itertools.cycle(apis)
        self._lock = threading.Lock()

    def next_api(self) -> Any:
        """The GAPIC client whose turn it is (thread-safe)."""
        with self._lock:
            return next(self._turns)

    def __getattr__(self, name: str) -> Any:
        # Only what the first client lacks reaches here; RPC methods are callables that must
        # be taken from the client whose turn it is at call time, anything else from the first.
        attribute = getattr(self.apis[0], name)
        if name.startswith("_") or not callable(attribute):
            return attribute
        return self._round_robin(name)

    def _round_robin(self, name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            return getattr(self.next_api(), name)(*args, **kwargs)

        return call
