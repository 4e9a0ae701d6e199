"""The mutation check: known-bad patches the simulation must catch within the CI seed budget.

Each mutant is a textual patch of one function's source (the bug as a reviewer would write it),
compiled in its module's namespace and swapped in for the duration of a run, then restored. A
patch whose text no longer matches the code fails loudly, so a mutant cannot silently stop
mutating. Swapping the function object rather than patching a copy of the tree keeps the check
in-process and fast (the whole point is to run it in CI); the code under test is otherwise the
very code the simulation runs.

`python -m tests.simulation.mutants [--seeds N] [--from-zero] [--rate]` prints, per mutant, a seed
that catches it (searched from its `hint`; with `--from-zero` the smallest, to refresh the hints)
and the violation; `tests/simulation/test_simulation.py` asserts each is caught within
`CI_SEEDS`. Most mutants are caught by a few seeds in a thousand: the hints keep `make test`
from replaying hundreds of schedules per mutant, without narrowing what counts as caught.
"""

from __future__ import annotations
import __future__

import argparse
import importlib
import inspect
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tests.simulation.run import run_seeds

CI_SEEDS = 1000


@dataclass(frozen=True)
class Mutant:
    """A known bug: in `module`, `qualname`'s source with each `(old, new)` replaced once."""

    name: str
    module: str
    qualname: str
    patches: tuple[tuple[str, str], ...]
    also_bound_in: tuple[str, ...] = ()
    """Modules that imported the function by name: they get the mutant too."""
    seeds: int = CI_SEEDS
    """The seeds it must be caught within: more than `CI_SEEDS` only for a window this world
    reaches rarely (its hint keeps the check to one schedule while the world is unchanged)."""
    hint: int = 0
    """A seed that caught it when last measured. The search of the `CI_SEEDS` starts there and
    wraps around: the same seeds, in another order, so a check costs one schedule while the
    world is unchanged and at most `seeds` after a change (`--from-zero` finds new hints)."""


MUTANTS = (
    Mutant(
        "take-over does not ask the broker first",
        "execution.engine",
        "ExecutionEngine._execute_held",
        (("if handle.attempt > 1 and self._may_reach_broker(account):", "if False:"),),
        hint=6,
    ),
    Mutant(
        "release not fenced",
        "execution.firestore.reservations",
        "FirestoreReservationHandle._release_once",
        (
            ("fence = self._db.write_option(last_update_time=known.version)", "fence = None"),
            (
                "if current is None or current.lease_id != self._record.lease_id:",
                "if current is None:",
            ),
        ),
        hint=1,
    ),
    Mutant(
        "no lease check before the broker call",
        "execution.engine",
        "ExecutionEngine._call_broker",
        (("self._check_lease_room(intent, handle)", "pass"),),
        hint=15,
    ),
    Mutant(
        "the position counts only placed orders",
        "execution.account_state",
        "admit",
        (
            (
                "_position(others, placed, lease,",
                "_position({}, placed, lease,",
            ),
        ),
        also_bound_in=("execution.firestore.reservations",),
        hint=73,
    ),
    Mutant(
        "the position limit ignores a sell's sign (a short grows past it)",
        "execution.account_state",
        "_position",
        (('direction = 1 if lease.side == "buy" else -1', "direction = 1"),),
        hint=7,
    ),
    Mutant(
        "the daily count is read on the wrong day (yesterday's)",
        "execution.account_state",
        "admit",
        (
            (
                "placed_today = state.placed_orders.get(today, 0)",
                "placed_today = state.placed_orders.get(utc_day(now - timedelta(days=1)), 0)",
            ),
        ),
        also_bound_in=("execution.firestore.reservations",),
        hint=60,
    ),
    Mutant(
        "a placed order counts on its recorder's UTC day alone (no skew across midnight)",
        "execution.account_state",
        "counted_days",
        (
            (
                "return tuple(sorted({utc_day(placed_at - skew), utc_day(placed_at + skew)}))",
                "return (utc_day(placed_at),)",
            ),
        ),
        also_bound_in=(
            "execution.firestore.account_state",
            "execution.firestore.reservation_records",
        ),
        # Two orders within a second of midnight on one broker day, the second admitted by a clock
        # still on the other day: 1 of seeds 0..999 even with the midnight scenario's slow pace.
        seeds=8 * CI_SEEDS,
        hint=89,
    ),
    Mutant(
        "a lapsed hold stops counting against position and daily orders",
        "execution.account_state",
        "admit",
        (("for lid, held in state.leases.items()", "for lid, held in state.active(now).items()"),),
        also_bound_in=("execution.firestore.reservations",),
        hint=7,
    ),
    Mutant(
        "a release of unknown fate ends its hold",
        "execution.engine",
        "ExecutionEngine._release",
        (("fate_unknown=fate.unknown and outcome is not Outcome.PLACED", "fate_unknown=False"),),
        hint=60,
    ),
    Mutant(
        "the reconciler ends a hold without asking the broker",
        "execution.broker_truth",
        "BrokerTruth.settle_hold",
        (("if names_it or record.outcome is not Outcome.PLACED:", "if False:"),),
        hint=65,
    ),
    Mutant(
        "a lost answer is not settled after a fenced release",
        "execution.engine",
        "ExecutionEngine._settle_lost_answer",
        (
            (
                "if released is not ReleaseResult.FENCED or not (fate.unknown and fate.called):",
                "if True:",
            ),
        ),
        hint=1,
    ),
    Mutant(
        "the unsettled_order marker is ignored (a marked record is acked as a duplicate)",
        "execution.engine",
        "ExecutionEngine._recorded",
        (("if record.unsettled_order is None:", "if True:"),),
        seeds=8000,  # the PENDING settle's window: aimed at (zombies), still 2 seeds in 1000
        hint=386,
    ),
    Mutant(
        "a take-over acks its forbidding outcome without looking for a marker",
        "execution.engine",
        "ExecutionEngine._answer",
        (("if handle.attempt <= 1 or result.outcome not in FORBIDDING_OUTCOMES:", "if True:"),),
        seeds=8000,  # the same rare window
        hint=386,
    ),
    Mutant(
        "a pending settle leaves no marker",
        "execution.engine",
        "ExecutionEngine._settle_or_mark",
        (("self._leave_marker(intent, handle, order)", "pass"),),
        hint=40,
    ),
    Mutant(
        "a refused lookup is a rejection (dead letter)",
        "execution.engine",
        "ExecutionEngine._earlier_order",
        (("raise BrokerTransientError(", "raise BrokerRejectedError("),),
        hint=7,
    ),
    Mutant(
        "client order id without the tenant",
        "execution.client_order_ids",
        "client_order_id_for",
        (('f"{PLAIN_PREFIX}{len(tenant_id)}-{tenant_id}-"', 'f"{PLAIN_PREFIX}"'),),
        also_bound_in=("execution.engine",),
        hint=10,
    ),
    Mutant(
        "the lease-room check leaves out the clock skew",
        "execution.engine",
        "ExecutionEngine.__init__",
        (
            (
                "timedelta(seconds=broker_call_seconds + clock_skew_seconds)",
                "timedelta(seconds=broker_call_seconds)",
            ),
        ),
        hint=42,
    ),
    Mutant(
        "a writer waits for its account's turn with no timeout (a paused holder blocks it)",
        "execution.firestore.account_turns",
        "AccountTurns._enter",
        (("_carried(queued), self._timeout_seconds", "_carried(queued), None"),),
        hint=0,
    ),
    Mutant(
        "a carried acquire's lease runs past its TTL (an unused lease held too long)",
        "execution.firestore.reservations",
        "FirestoreReservationManager._plan_acquire",
        (("ttl=self._ttl,", "ttl=2 * self._ttl,"),),
        # A line that carries an acquire is rare (3 of seeds 0..999 catch it).
        seeds=3 * CI_SEEDS,
        hint=83,
    ),
    Mutant(
        "a hold of unknown fate counts against the budget after its release",
        "execution.firestore.account_state",
        "stage_attempt_end",
        (
            (
                "record.client_intent_id, record.amount_usd, now, record.symbol",
                "record.client_intent_id, record.amount_usd, record.expires_at, record.symbol",
            ),
        ),
        also_bound_in=("execution.firestore.reservations",),
        hint=7,
    ),
    Mutant(
        "the sweep skips a lapsed lease whose hold ended meanwhile",
        "execution.firestore.sweeper_store",
        "FirestoreExpiredLeases.expire",
        (("if not _holds_lapsed_lease(snap, lease.lease_id, now):", "if True:"),),
        hint=156,
    ),
)


@contextmanager
def applied(mutant: Mutant) -> Iterator[None]:
    """Run the body with `mutant` in place of the real function."""
    module = importlib.import_module(mutant.module)
    *path, attr = mutant.qualname.split(".")
    owner: Any = module
    for part in path:
        owner = getattr(owner, part)
    original = owner.__dict__[attr]
    source = textwrap.dedent(inspect.getsource(getattr(owner, attr)))
    for old, new in mutant.patches:
        if source.count(old) != 1:
            raise AssertionError(
                f"mutant {mutant.name!r}: {old!r} is not once in {mutant.qualname}"
            )
        source = source.replace(old, new)
    namespace: dict[str, Any] = {}
    flags = __future__.annotations.compiler_flag
    code = compile(source, f"<mutant: {mutant.name}>", "exec", flags=flags, dont_inherit=True)
    exec(code, module.__dict__, namespace)
    bound = [importlib.import_module(name) for name in mutant.also_bound_in]
    setattr(owner, attr, namespace[attr])
    for other in bound:
        setattr(other, attr, namespace[attr])
    try:
        yield
    finally:
        setattr(owner, attr, original)
        for other in bound:
            setattr(other, attr, original)


def first_catch(
    mutant: Mutant, seeds: int | None = None, *, from_hint: bool = True
) -> tuple[int, str] | None:
    """A seed below `seeds` (the mutant's own budget by default) whose schedule breaks an
    invariant under `mutant`, searched from its hint and around (`from_hint`), or the smallest
    such seed."""
    seeds = mutant.seeds if seeds is None else seeds
    start = mutant.hint if from_hint and mutant.hint < seeds else 0
    with applied(mutant):
        for first, count in ((start, seeds - start), (0, start)):
            summary = run_seeds(first, count)
            if summary.failure is not None:
                seed, violation, _ = summary.failure
                return seed, violation
    return None


def catch_rate(mutant: Mutant, seeds: int = CI_SEEDS) -> int:
    """How many of the first `seeds` schedules break an invariant under `mutant`."""
    with applied(mutant):
        return run_seeds(0, seeds, stop_on_failure=False).failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, help="default: each mutant's own budget")
    parser.add_argument("--rate", action="store_true", help="also count the seeds that catch each")
    parser.add_argument(
        "--from-zero", action="store_true", help="the smallest catching seed (new hints)"
    )
    args = parser.parse_args(argv)
    missed = 0
    for mutant in MUTANTS:
        seeds = args.seeds or mutant.seeds
        caught = first_catch(mutant, seeds, from_hint=not args.from_zero)
        if caught is None:
            missed += 1
            print(f"MISSED  {mutant.name}: no violation in {seeds} seeds")
        else:
            stale = "" if caught[0] == mutant.hint else f" (its hint {mutant.hint} is stale)"
            print(f"caught  {mutant.name}: seed {caught[0]}{stale}: {caught[1]}")
            if args.rate:
                print(f"        caught by {catch_rate(mutant, seeds)} of {seeds} seeds")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
