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

Why carry the work of the writers in line: while one writer holds the turn, the others behind
it wait with everything they need: a fresh intent's acquire its request and opening read, a
counted lease's release its outcome and the version its lease wrote. The writer that gets the
turn next claims all of them (`Queued`, `Turn.claimed`), decides each in order on the state the
ones before it leave, and writes every piece (the reservations created, the records ended, their
ledger riders) and the state those pieces leave, once, in one batch: one commit for the line
instead of one each. Each piece's write is a precondition of its own (a `create`, a release's
fence on its lease) and the state's `update_time` one more, so the batch fails as a whole (a
redelivery or a fenced release among them, another instance's write, an answer lost after it
may have landed): every writer, the carrier too, then does its own, alone, as before, and learns
from its own preconditions what a batch that landed did. A writer whose work was carried never
takes the turn: it picks its answer up when the carrier's turn ends.

A turn is waited for at most `timeout_seconds`, then the writer goes ahead without it (and
without the handed state). Every holder ends within its own store deadlines, so the bound only
matters for a process paused while holding; it is long (60 s) because a writer that stops waiting
barges into the line and loses its races (a 64-intent burst on a loaded machine, with 10 s, sent
4 intents back for contention). With a timeout of 0 it never waits. `condition` makes the
stripes' conditions: a simulation that decides every interleaving itself passes one whose waits
park the waiter in the simulated world's time (`tests/simulation/turn_waits.py`). Locks are
striped: a fixed number, shared by accounts whose keys hash alike, so memory stays bounded however
many accounts an instance sees (each stripe keeps the state of the last account that handed one
over).
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Iterator
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


class Queued:
    """A writer's work, queued while it waits for its turn, that the writer ahead of it may carry
    out with its own in one commit (see the module). Settled once: carried out (its writer then
    only picks its answer up, without taking the turn), or left for its writer to do alone."""

    def __init__(self) -> None:
        self.settled = False
        self.carried = False

    def settle(self, *, carried: bool) -> None:
        """Say whether this work was carried out (its writer learns it when the turn ends)."""
        if not self.settled:
            self.settled, self.carried = True, carried


class Turn:
    """One writer's turn on one account: whether it waited, the state the writer before it
    handed over (None where there is none, or the turn is not held), where to hand one on, and
    the queued work this writer claimed to carry out with its own (its own first in line)."""

    def __init__(
        self,
        *,
        waited: bool,
        held: bool,
        handed: KnownState | None,
        claimed: list[Queued] | None = None,
    ) -> None:
        self.waited = waited
        self.held = held
        self.handed = handed
        self.handing: KnownState | None = None
        self.claimed = claimed or []

    def hand_over(self, known: KnownState | None) -> None:
        """Leave `known` for the next writer of this account (None: leave nothing)."""
        self.handing = known if self.held else None


class AccountTurns:
    """One writer of an account's state document at a time in this process (see the module)."""

    def __init__(
        self,
        *,
        stripes: int = DEFAULT_STRIPES,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        condition: Callable[[], threading.Condition] = threading.Condition,
    ) -> None:
        # Per stripe, all guarded by the stripe's condition: whether a writer holds the turn, the
        # account key and state its last writer handed over, and the work of the writers waiting.
        self._conditions = [condition() for _ in range(stripes)]
        self._busy = [False] * stripes
        self._handed: list[tuple[str, KnownState] | None] = [None] * stripes
        self._queues: list[list[tuple[str, Queued]]] = [[] for _ in range(stripes)]
        self._timeout_seconds = timeout_seconds

    @contextmanager
    def turn(
        self, tenant_id: str, broker_account_id: str, queued: Queued | None = None
    ) -> Iterator[Turn]:
        """Hold the account's turn for the block; the `Turn` says whether this writer waited for
        another to finish (what it read before then may be out of date) and what it handed on.

        `queued`: this writer's work, which a writer ahead in line may claim and carry out with
        its own; where it was carried, the block runs without the turn (`Turn.held` False) and
        only picks the answer up. Holding the turn with it unsettled, this writer claims the work
        waiting in line (`Turn.claimed`, its own included); what it does not settle as carried
        is settled as left to its writer when the block ends.
        """
        key = f"{tenant_id}/{broker_account_id}"
        stripe = zlib.crc32(key.encode()) % len(self._conditions)
        turn = self._enter(stripe, key, queued)
        try:
            yield turn
        finally:
            if turn.held:
                self._leave(stripe, key, turn)

    def waiting(self, tenant_id: str, broker_account_id: str) -> int:
        """How many writers wait in line with work for the account (a test holds a turn until
        they all do)."""
        key = f"{tenant_id}/{broker_account_id}"
        stripe = zlib.crc32(key.encode()) % len(self._conditions)
        with self._conditions[stripe]:
            return sum(1 for k, _ in self._queues[stripe] if k == key)

    def _enter(self, stripe: int, key: str, queued: Queued | None) -> Turn:
        condition, queue = self._conditions[stripe], self._queues[stripe]
        with condition:
            lines_up = queued is not None and self._timeout_seconds > 0
            if lines_up:
                queue.append((key, queued))  # type: ignore[arg-type]
            waited = self._busy[stripe] and self._timeout_seconds > 0
            if waited:
                condition.wait_for(
                    lambda: not self._busy[stripe] or _carried(queued), self._timeout_seconds
                )
            in_vain = self._busy[stripe] and lines_up and not _carried(queued)
            if in_vain and not _withdraw(queue, queued):
                # Waited in vain, but the holder claimed this work: its fate comes as it ends.
                condition.wait_for(lambda: _settled(queued), self._timeout_seconds)
            if _carried(queued) or self._busy[stripe]:
                # Carried out by the writer ahead: pick the answer up; or waited in vain: go
                # ahead without the turn (the preconditions still decide).
                return Turn(waited=waited, held=False, handed=None)
            self._busy[stripe] = True
            kept, self._handed[stripe] = self._handed[stripe], None
            handed = kept[1] if kept is not None and kept[0] == key else None
            claimed: list[Queued] = []
            if lines_up and not _settled(queued):
                claimed = [work for k, work in queue if k == key]
                queue[:] = [(k, work) for k, work in queue if k != key]
            return Turn(waited=waited, held=True, handed=handed, claimed=claimed)

    def _leave(self, stripe: int, key: str, turn: Turn) -> None:
        condition = self._conditions[stripe]
        with condition:
            for work in turn.claimed:
                work.settle(carried=False)  # what the holder did not carry, its writer does
            if turn.handing is not None:
                self._handed[stripe] = (key, turn.handing)
            self._busy[stripe] = False
            condition.notify_all()


def _carried(queued: Queued | None) -> bool:
    return queued is not None and queued.carried


def _settled(queued: Queued | None) -> bool:
    return queued is not None and queued.settled


def _withdraw(queue: list[tuple[str, Queued]], queued: Queued | None) -> bool:
    """Take `queued` out of line; False where a holder already claimed it."""
    for index, (_, waiting) in enumerate(queue):
        if waiting is queued:
            del queue[index]
            return True
    return False
