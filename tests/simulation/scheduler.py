"""The baton: real code in threads, one running at a time, the seed choosing who runs next.

Each actor (a Pub/Sub delivery, a sweep, a reconcile) runs its real code in a thread of its own,
but only the thread holding the baton runs. Every point where the code touches the outside world
(a store call, a broker call, a clock read) calls `Scheduler.point`, which hands the baton back to
the scheduler's thread; the world then decides, from its seeded generator, what happens next and
whom to give the baton to. So a run is a function of the seed alone, and an actor that never gets
the baton again is a SIGKILLed process (its `finally` never runs), one that gets it much later a
paused one (a zombie).

When a schedule ends, `close` wakes every parked actor with `Abandoned` (a `BaseException`, so no
`except Exception` of the code under test swallows it); every hook raises it again at once, before
its call has any effect, so the unwinding `finally` blocks change nothing, and `close` waits for
every actor to have unwound before the next schedule starts: nothing of one schedule leaks into the
next. Threads are pooled across schedules (starting one costs more than a whole step on a loaded
machine); an actor holds its thread from its start to its end only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

WATCHDOG_SECONDS = 30.0
"""Real seconds an actor may hold the baton without reaching a point: past it, the code under
test blocks on something the simulation does not own (a lock held across a point, a real sleep)."""


class Abandoned(BaseException):
    """The schedule is over: the parked actor unwinds without touching the world."""


class SimulationStuck(RuntimeError):
    """An actor neither reached a point nor ended within `WATCHDOG_SECONDS`."""


@dataclass(eq=False)
class Actor:
    """One process of the simulated world: its state, and what the invariants need of it."""

    name: str
    kind: str
    """`delivery`, `sweep` or `reconcile`."""
    body: Callable[[], Any]
    message_id: str | None = None
    intent_key: tuple[str, str] | None = None
    state: str = "ready"
    """`ready`, `paused` (until `resume_at`), `blocked` (waiting for an account's turn: until
    `wakes` says it was notified, or `resume_at`, its timeout), `killed`, `done`."""
    resume_at: datetime | None = None
    result: Any = None
    error: BaseException | None = None
    started: bool = False
    first_step: int | None = None
    leases: list[tuple[str, int]] = field(default_factory=list)
    """Lease ids this actor drew, with the step at which it drew each."""
    yielded_at: datetime | None = None
    stalled: bool = False
    """More than `STALL_SECONDS` passed while it waited at its last point: it was paused there."""
    paused_in_place: bool = False
    """It was paused at its last broker `place` call, before the broker acted."""
    queued_release_of: str | None = None
    """The lease whose release it queued in its account's line (it waited holding the record):
    a carrier may land that release even after it gave up waiting, where it wrote nothing."""
    edge_drawn: bool = False
    """The seed has drawn whether time runs to its lease's edge (`World._jump_to_the_edge`)."""
    at_the_edge: bool = False
    """Time was run to where its lease has room for its broker call only without the clock
    skew's margin: its call stalls (`World._jump_to_the_edge`)."""
    woke_outlived: bool = False
    """It was woken (paused inside its broker call) while a newer attempt held its intent."""
    asked_broker: bool = False
    """It has looked its intent's order up at the broker (a take-over asks before it decides)."""
    faults: int = 0
    """Store and broker faults injected into its calls so far."""
    clock_offset: float = 0.0
    """Seconds its clock runs ahead of the world's (behind where negative): its own machine."""
    instance: int = 0
    """The instance it runs in: the deliveries of one instance share its account turns."""
    wakes: Callable[[], bool] | None = None
    """While `blocked`: whether the turn it waits for was handed on (it was notified)."""
    blocked_since: datetime | None = None
    last_point: str = ""
    """What it did at its last point (`store query ...`, `broker place`, ...)."""

    @property
    def alive(self) -> bool:
        return self.state in ("ready", "paused", "blocked")

    @property
    def lease_id(self) -> str | None:
        return self.leases[-1][0] if self.leases else None


class Scheduler:
    """Hands one baton between the scheduler's thread and the actors' threads.

    Each thread waits on a lock of its own (held until someone hands it the baton), so a handoff
    wakes exactly one thread, whatever the number of parked actors.
    """

    def __init__(self) -> None:
        self._back = _signal()
        self._go: dict[int, threading.Lock] = {}
        self._ended: dict[int, threading.Lock] = {}
        self._closed = False
        self._actors: list[Actor] = []
        self._local = threading.local()

    @property
    def current(self) -> Actor | None:
        """The actor holding the baton; None on the scheduler's own thread."""
        actor: Actor | None = getattr(self._local, "actor", None)
        return actor

    def spawn(self, actor: Actor) -> Actor:
        """Create `actor`'s thread, parked until it first gets the baton."""
        self._go[id(actor)] = _signal()
        self._ended[id(actor)] = _signal()
        self._actors.append(actor)
        _POOL.submit(lambda: self._main(actor))
        return actor

    def run(self, actor: Actor) -> None:
        """Give `actor` the baton until it reaches its next point or ends."""
        actor.started = True
        self._go[id(actor)].release()
        if not self._back.acquire(timeout=WATCHDOG_SECONDS):
            raise SimulationStuck(f"{actor.name} held the baton for {WATCHDOG_SECONDS}s")

    def point(self) -> None:
        """Called by the actor holding the baton: give it back, wait to get it again."""
        actor = self.current
        if actor is None:
            return
        if self._closed:
            raise Abandoned
        self._back.release()
        self._go[id(actor)].acquire()
        if self._closed:
            raise Abandoned

    def close(self) -> None:
        """End the schedule: unwind every parked actor and join its thread."""
        self._closed = True
        for actor in self._actors:
            self._go[id(actor)].release()
        for actor in self._actors:
            if not self._ended[id(actor)].acquire(timeout=WATCHDOG_SECONDS):
                raise SimulationStuck(f"{actor.name} did not unwind")

    def _main(self, actor: Actor) -> None:
        self._local.actor = actor
        try:
            self._play(actor)
        finally:
            self._local.actor = None
            self._ended[id(actor)].release()

    def _play(self, actor: Actor) -> None:
        self._go[id(actor)].acquire()
        if self._closed:
            return
        try:
            actor.result = actor.body()
        except Abandoned:
            return
        except BaseException as exc:  # the world judges it; the thread must end cleanly
            actor.error = exc
        if self._closed:
            return
        actor.state = "done"
        self._back.release()


class _Pool:
    """Daemon threads that run one task at a time and wait, parked, for the next."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []

    def submit(self, task: Callable[[], None]) -> None:
        with self._lock:
            worker = self._idle.pop() if self._idle else None
        if worker is None:
            worker = _Worker(self)
        worker.task = task
        worker.wake.release()

    def idle(self, worker: _Worker) -> None:
        with self._lock:
            self._idle.append(worker)


class _Worker:
    def __init__(self, pool: _Pool) -> None:
        self._pool = pool
        self.wake = _signal()
        self.task: Callable[[], None] | None = None
        threading.Thread(target=self._loop, name="sim-worker", daemon=True).start()

    def _loop(self) -> None:
        while True:
            self.wake.acquire()
            task, self.task = self.task, None
            if task is not None:
                task()
            self._pool.idle(self)


_POOL = _Pool()


def _signal() -> threading.Lock:
    """A lock held from the start: `release` hands the baton, `acquire` waits for it."""
    lock = threading.Lock()
    lock.acquire()
    return lock
