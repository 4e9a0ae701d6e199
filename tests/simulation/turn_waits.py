"""Turns waited for in the world's time: `AccountTurns` with a condition whose waits park the actor.

The real `AccountTurns` waits on a `threading.Condition`; in the simulation a real wait would
block the baton's holder on a lock that a parked actor holds. `WorldCondition` keeps the lock
(no actor holds it across a point) but turns each wait into a park: the waiter lets the lock go,
hands the baton back, and the world makes it ready again once it was notified (the holder left
its turn) or its timeout passed in the world's time (`World.park`). So a contended turn is waited
for, a paused holder keeps its waiters waiting, and a holder that never comes back (killed) leaves
them to go ahead without the turn when their timeout ends: the barge-in.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

from execution.firestore.account_turns import AccountTurns, Queued, Turn

if TYPE_CHECKING:
    from tests.simulation.world import World

T = TypeVar("T")


class WorldCondition(threading.Condition):
    """A condition whose `wait` parks the calling actor until notified or timed out, in the
    world's time; notifying only counts (every waiter is the world's to wake)."""

    def __init__(self, world: World) -> None:
        super().__init__(threading.Lock())
        self._world = world
        self._notified = 0

    def wait(self, timeout: float | None = None) -> bool:
        seen = self._notified
        self.release()
        try:
            self._world.park(lambda: self._notified != seen, timeout)
        finally:
            self.acquire()
        return self._notified != seen

    def wait_for(self, predicate: Callable[[], T], timeout: float | None = None) -> T:
        deadline = None if timeout is None else self._world.seconds() + timeout
        result = predicate()
        while not result:
            left = None if deadline is None else deadline - self._world.seconds()
            if left is not None and left <= 0:
                break
            self.wait(left)
            result = predicate()
        return result

    def notify(self, n: int = 1) -> None:
        self._notified += 1

    def notify_all(self) -> None:
        self._notified += 1


class InstanceTurns(AccountTurns):
    """The service's account turns, one `AccountTurns` per simulated instance (`World.turns_of`):
    the writers of one instance take turns, those of two instances race on preconditions alone."""

    def __init__(self, world: World) -> None:
        super().__init__(stripes=1, timeout_seconds=0.0)
        self._world = world

    @contextmanager
    def turn(
        self, tenant_id: str, broker_account_id: str, queued: Queued | None = None
    ) -> Iterator[Turn]:
        with self._world.turns_of_current().turn(tenant_id, broker_account_id, queued) as turn:
            yield turn

    def waiting(self, tenant_id: str, broker_account_id: str) -> int:
        return self._world.turns_of_current().waiting(tenant_id, broker_account_id)


def instance_turns(world: World, timeout_seconds: float) -> AccountTurns:
    """One instance's account turns, waited for in `world`'s time for up to `timeout_seconds`."""
    return AccountTurns(timeout_seconds=timeout_seconds, condition=lambda: WorldCondition(world))
