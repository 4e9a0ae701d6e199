"""Fault injection: the simulation decides, before each store call, whether it fails.

The client calls the hook with a `StoreCall` before every read (`get`, `get_all`), query
(`query`, `aggregate`) and commit (`commit`: every write, a batch or a single document's). The hook
returns None (the call proceeds) or a `Fault`: its error is raised before the call has any effect,
or, for a commit with `after_commit`, once the writes have landed: the "failed after it took
effect" case a lost answer or a timed-out RPC produces. The hook is also where a scheduler may
switch to another invocation: nothing of the call has happened yet when it runs.

The client passes no retry: the error a fault raises is what the caller's call ends with, after
whatever in-call retries the simulation chose to model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from google.api_core import exceptions as gexc


@dataclass(frozen=True)
class StoreCall:
    """One call about to reach the store."""

    kind: str
    """`get`, `get_all`, `query`, `aggregate` or `commit`."""
    paths: tuple[str, ...]
    """The documents read or written; for a query, its scope (collection path or `**/id`)."""


@dataclass(frozen=True)
class Fault:
    """An error for one call; `after_commit` lets a commit land first."""

    error: BaseException
    after_commit: bool = False


FaultHook = Callable[[StoreCall], Fault | None]


def unavailable(after_commit: bool = False) -> Fault:
    """The store did not answer (`ServiceUnavailable`)."""
    return Fault(gexc.ServiceUnavailable("simulated: the store did not answer"), after_commit)


def deadline_exceeded(after_commit: bool = False) -> Fault:
    """The call ran out of time (`DeadlineExceeded`)."""
    return Fault(gexc.DeadlineExceeded("simulated: deadline exceeded"), after_commit)
