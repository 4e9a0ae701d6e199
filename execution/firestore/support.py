"""What every Firestore adapter shares: bounded calls, error translation, jittered retries.

Each call gets an explicit deadline so a store outage becomes a quick `StoreUnavailableError`
instead of the client library's default minute of retrying; the Pub/Sub redelivery is the retry.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Generic, TypeVar

from google.api_core import exceptions as gexc
from google.api_core import retry as gretry

from execution.errors import StoreUnavailableError

Answer = TypeVar("Answer")

# Errors that say the store did not answer, as opposed to answering "no".
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.InternalServerError,
    gexc.Unknown,
    gexc.ResourceExhausted,
    gexc.RetryError,
    gexc.Cancelled,
)

# Lost optimistic races: the document changed between our read and our commit.
RACE_ERRORS: tuple[type[BaseException], ...] = (
    gexc.AlreadyExists,
    gexc.FailedPrecondition,
    gexc.Aborted,
)


@dataclass(frozen=True)
class CallPolicy:
    """Deadline and in-call retry for one Firestore RPC."""

    timeout_seconds: float

    @cached_property
    def _retry(self) -> gretry.Retry:
        # Built once: a Retry holds no per-call state, and every RPC of an intent passes one.
        return gretry.Retry(
            predicate=gretry.if_exception_type(gexc.ServiceUnavailable, gexc.InternalServerError),
            initial=0.05,
            maximum=1.0,
            multiplier=2.0,
            timeout=self.timeout_seconds,
        )

    def retry(self) -> gretry.Retry:
        """Retry transport failures within the deadline; never a lost race or a refusal."""
        return self._retry

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for a client call: `retry` and `timeout`."""
        return {"retry": self._retry, "timeout": self.timeout_seconds}


def snapshot_data(snapshot: Any) -> dict[str, Any] | None:
    """A document snapshot's fields; None where the document does not exist."""
    return (snapshot.to_dict() or {}) if snapshot.exists else None


@contextmanager
def store_errors(operation: str) -> Iterator[None]:
    """Turn 'the store did not answer' into `StoreUnavailableError`, chained."""
    try:
        yield
    except UNAVAILABLE_ERRORS as exc:
        raise StoreUnavailableError(f"Firestore unavailable during {operation}: {exc}") from exc


def jitter_sleep(
    attempt: int,
    *,
    base: float = 0.05,
    cap: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
    uniform: Callable[[float, float], float] = random.uniform,
) -> None:
    """Sleep a random time below base x 2^attempt (capped), so contenders stop colliding.

    `sleep` and `uniform` are injectable so that a simulation decides both.
    """
    sleep(uniform(0, min(cap, base * (2**attempt))))


class Retry:
    """An attempt lost a race, or must read before it can decide: try again (after a pause
    where `pause`: a race lost to a writer we read, not one against a guess we made unread)."""

    def __init__(self, *, pause: bool) -> None:
        self.pause = pause


@dataclass(frozen=True)
class Attempts(Generic[Answer]):
    """The one loop of the optimistic writers (a reservation's acquire and its release): each
    attempt reads, decides, builds its batch and commits; a lost race comes back as `Retry`.

    Generic in the answer, named at the call (`Attempts[ReleaseResult](...)`): mypy cannot
    infer a union answer through `Answer | Retry`.
    """

    limit: int
    pause: Callable[[int], None]
    exhausted: Callable[[], Exception]

    def until_answer(self, attempt: Callable[[int], Answer | Retry]) -> Answer:
        """Call `attempt(n)` for n = 0, 1, ... until it answers; raise `exhausted()` after
        `limit` attempts, pausing after each `Retry` that asks for it."""
        for n in range(self.limit):
            answer = attempt(n)
            if not isinstance(answer, Retry):
                return answer
            if answer.pause:
                self.pause(n)
        raise self.exhausted()
