"""`AccountTurns`: the writers of one account's state document take turns within this process,
and each hands the state it committed to the next.

Why turns: every acquire on a limited account rewrites the account's state document under a
precondition on the version it read, and every release of a counted lease changes that document
too. Invocations of one instance that work on one hot account at once would otherwise read the
same version, commit, and all but one lose the race, read again and lose again (a burst of 48 on
one account measured a third of them out of attempts, answering `ReservationContentionError`).
Taking turns in the process turns those lost races into a short wait for the lock.

Why hand the state over: a writer that waited for its turn knows its opening read is out of date
(the writer before it changed the document), and reading again costs a round trip inside the
turn, which every writer behind it waits for. But the writer before it knows what it committed:
the state it wrote, and the document's `update_time` its commit answered. It leaves that
(`KnownState`) with the turn, and the next writer decides on it and writes under a precondition
on that `update_time`, without a read. Handing over is an optimisation, never a guarantee: the
precondition alone keeps every limit. A state that is stale (another instance, the sweeper, the
reconciler or a writer of this process that holds no turn wrote since) fails the precondition
and the writer reads, exactly as for a stale read. A state is taken off the turn when a writer
enters and put back only when that writer hands one over, so a writer whose commit failed or
whose outcome is unknown leaves none.

A turn is waited for at most `timeout_seconds`, then the writer goes ahead without it (and
without the handed state). Every holder ends within its own store deadlines, so the bound only
matters for a process paused while holding; it is long (60 s) because a writer that stops waiting
barges into the line and loses its races (a 64-intent burst on a loaded machine, with 10 s, sent
4 intents back for contention). With a timeout of 0 it never waits: a simulation that decides
every interleaving itself must not block on a lock its parked actor holds. Locks are striped: a
fixed number, shared by accounts whose keys hash alike, so memory stays bounded however many
accounts an instance sees (each stripe keeps the state of the last account that handed one over).
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from google.cloud import firestore

from execution.account_state import AccountState

DEFAULT_STRIPES = 64
DEFAULT_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class KnownState:
    """An account's state document as a commit of this process left it: the state, parsed, and
    the document's `update_time` then (None: the document does not exist), which a writer that
    decides on it makes the precondition of its write."""

    reference: firestore.DocumentReference
    state: AccountState
    update_time: Any

    @property
    def exists(self) -> bool:
        """Whether the document existed (what `stage_admission` asks of a snapshot too)."""
        return self.update_time is not None


class Turn:
    """One writer's turn on one account: whether it waited, the state the writer before it
    handed over (None where there is none, or the turn is not held), and where to hand one on."""

    def __init__(self, *, waited: bool, held: bool, handed: KnownState | None) -> None:
        self.waited = waited
        self.held = held
        self.handed = handed
        self.handing: KnownState | None = None

    def hand_over(self, known: KnownState | None) -> None:
        """Leave `known` for the next writer of this account (None: leave nothing)."""
        self.handing = known if self.held else None


class AccountTurns:
    """One writer of an account's state document at a time in this process (see the module)."""

    def __init__(
        self, *, stripes: int = DEFAULT_STRIPES, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    ) -> None:
        self._locks = [threading.Lock() for _ in range(stripes)]
        # Per stripe: the account key and the state its last writer handed over. Read and written
        # only by the holder of the stripe's lock.
        self._handed: list[tuple[str, KnownState] | None] = [None] * stripes
        self._timeout_seconds = timeout_seconds

    @contextmanager
    def turn(self, tenant_id: str, broker_account_id: str) -> Iterator[Turn]:
        """Hold the account's turn for the block; the `Turn` says whether this writer waited for
        another to finish (what it read before then may be out of date) and what it handed on."""
        key = f"{tenant_id}/{broker_account_id}"
        stripe = zlib.crc32(key.encode()) % len(self._locks)
        lock = self._locks[stripe]
        held = lock.acquire(blocking=False)
        waited = False
        if not held and self._timeout_seconds > 0:
            held = waited = lock.acquire(timeout=self._timeout_seconds)
        handed = None
        if held:
            kept, self._handed[stripe] = self._handed[stripe], None
            handed = kept[1] if kept is not None and kept[0] == key else None
        turn = Turn(waited=waited, held=held, handed=handed)
        try:
            yield turn
        finally:
            if held:
                if turn.handing is not None:
                    self._handed[stripe] = (key, turn.handing)
                lock.release()
