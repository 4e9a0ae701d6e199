"""Where an intent's time goes: store round trips per intent, and time per engine stage.

Round trips are counted by wrapping the methods of the client's GAPIC stub (`_firestore_api`), so
every RPC the library sends is seen, whichever adapter sent it. Stages are timed by putting each
collaborator of the engine `bootstrap` built behind a timing proxy (`collaborator.method`); what
is left of the whole call (validation, hashing, logs) is reported as `engine (rest)`.
"""

from __future__ import annotations

import dataclasses
import inspect
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from google.cloud import firestore

from bench.common import client, progress, reset
from bench.workload import account_ids, engine_service, intent, seed

RPC_METHODS = (
    "batch_get_documents",
    "begin_transaction",
    "commit",
    "rollback",
    "run_query",
    "batch_write",
    "get_document",
    "update_document",
    "create_document",
)


class RpcCounter:
    """Counts the RPCs a client sends, by method, and which stage sent them."""

    def __init__(self, db: firestore.Client) -> None:
        self.calls: Counter[str] = Counter()
        self.by_stage: Counter[str] = Counter()
        self._stage = threading.local()
        api = db._firestore_api  # the GAPIC client every adapter's call goes through
        for name in RPC_METHODS:
            original = getattr(api, name, None)
            if original is not None:
                setattr(api, name, self._counted(name, original))

    def stage(self, name: str | None) -> None:
        """Attribute this thread's next RPCs to stage `name`."""
        self._stage.name = name

    def _counted(self, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            self.by_stage[getattr(self._stage, "name", None) or "other"] += 1
            return original(*args, **kwargs)

        return call


class StageTimer:
    """Accumulates wall time per stage."""

    def __init__(self, counter: RpcCounter) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self._counter = counter

    def timed(self, stage: str, call: Callable[..., Any]) -> Callable[..., Any]:
        """`call`, timed (and its RPCs attributed) as `stage`."""

        def run(*args: Any, **kwargs: Any) -> Any:
            self._counter.stage(stage)
            start = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                self.seconds[stage] += time.perf_counter() - start
                self._counter.stage(None)

        return run


class _Timed:
    """A collaborator of the engine whose public methods are timed as `name.method`.

    Objects the engine reaches through one are timed too: the invocation `store.open` returns
    (its ports show under their own names: `reservations.acquire`, `quotes.latest`, ...,
    `invocation.flush`) and the handle `reservations.acquire` hands out (`handle.release`).
    """

    def __init__(self, name: str, target: Any, timer: StageTimer) -> None:
        self._name = name
        self._target = target
        self._timer = timer

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._target, attr)
        if attr.startswith("_"):
            return value
        if not callable(value):
            # The invocation's ports are attributes: time each under its own name.
            return _Timed(attr, value, self._timer) if self._name == "invocation" else value
        call = self._timer.timed(f"{self._name}.{attr}", value)
        if (self._name, attr) == ("store", "open"):
            return lambda *args, **kwargs: _Timed("invocation", call(*args, **kwargs), self._timer)
        if (self._name, attr) != ("reservations", "acquire"):
            return call

        def acquire(*args: Any, **kwargs: Any) -> Any:
            result = call(*args, **kwargs)
            handle = getattr(result, "handle", None)
            if handle is None:
                return result
            return dataclasses.replace(result, handle=_Timed("handle", handle, self._timer))

        return acquire


_PLAIN_VALUES = (bool, int, float, str, type(None), timedelta)
"""Settings the engine keeps as values (its lease margin is a timedelta), not collaborators."""


def instrument(engine: Any, timer: StageTimer) -> list[str]:
    """Put every collaborator object of `engine` behind `_Timed`; the names wrapped.

    Found by looking at the engine's attributes, so a stage added to the engine is profiled
    without a change here; plain values and functions (the clock) are left alone.
    """
    wrapped = []
    for attr, value in list(vars(engine).items()):
        if isinstance(value, _PLAIN_VALUES) or inspect.isroutine(value):
            continue
        name = attr.lstrip("_")
        setattr(engine, attr, _Timed(name, value, timer))
        wrapped.append(name)
    return wrapped


@dataclass
class Profile:
    """Per-intent averages over `intents` sequential intents."""

    intents: int
    total_ms: float
    rpcs_by_method: dict[str, float]
    rpcs_by_stage: dict[str, float]
    ms_by_stage: dict[str, float]

    @property
    def rpcs(self) -> float:
        """Round trips per intent."""
        return sum(self.rpcs_by_method.values())

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return {
            "intents": self.intents,
            "total_ms": round(self.total_ms, 2),
            "rpcs_per_intent": round(self.rpcs, 2),
            "rpcs_by_method": self.rpcs_by_method,
            "rpcs_by_stage": self.rpcs_by_stage,
            "ms_by_stage": self.ms_by_stage,
        }


def measure(project: str, *, intents: int, accounts: int = 20, budget: bool = False) -> Profile:
    """Profile `intents` sequential intents through the default wiring, stage by stage."""
    reset(project)
    db = client(project)
    seed(db, accounts=accounts, budget=budget)
    counter = RpcCounter(db)
    timer = StageTimer(counter)
    service = engine_service(db, project)
    instrument(service.engine, timer)
    ids = account_ids(accounts)
    for warm in range(20):
        service.engine.execute_intent(intent("profile-warm", 0, warm, ids))
    counter.calls.clear()
    counter.by_stage.clear()
    timer.seconds.clear()
    progress(f"profile: {intents} sequential intents, counting RPCs and timing stages")
    start = time.perf_counter()
    for sequence in range(intents):
        service.engine.execute_intent(intent("profile", 0, sequence, ids))
    total = time.perf_counter() - start
    db.close()
    staged = sum(timer.seconds.values())
    ms_by_stage = {k: round(v / intents * 1000, 2) for k, v in timer.seconds.items()}
    ms_by_stage["engine (rest)"] = round((total - staged) / intents * 1000, 2)
    return Profile(
        intents=intents,
        total_ms=total / intents * 1000,
        rpcs_by_method={k: round(v / intents, 2) for k, v in counter.calls.items()},
        rpcs_by_stage={k: round(v / intents, 2) for k, v in counter.by_stage.items()},
        ms_by_stage=ms_by_stage,
    )


def bound_rpcs(project: str, *, operations: int = 20) -> dict[str, float]:
    """RPCs per bound operation, by method (counted the same way as the engine's)."""
    from bench.workload import BoundOperation

    reset(project)
    db = client(project)
    counter = RpcCounter(db)
    bound = BoundOperation(db, "rpcs")
    bound(0, -1)
    counter.calls.clear()
    for sequence in range(operations):
        bound(0, sequence)
    db.close()
    return {k: round(v / operations, 2) for k, v in counter.calls.items()}
