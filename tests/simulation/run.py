"""Run schedules by seed: `python -m tests.simulation.run --seeds N [--first S]` or `--seed S`.

Prints one line per run: the seeds, the steps taken, the distinct schedules explored and the
faults injected by kind. On a violation it prints the replay command and the failing schedule's
trace (its steps, the failing intent's and the world's), and exits 1. `make simulate SEEDS=N`
and `make simulate SEED=s` call it.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from tests.simulation.invariants import Violation
from tests.simulation.world import World

WORLD_EVENTS = ("CLOCK", "time passes", "OPERATOR", "sweep", "reconcile")
_INTENT = re.compile(r"\(?'?(t\d)'?(?:, '|/|/execution_reservations/)(i\d)")


@dataclass
class Summary:
    """What a run of many seeds did."""

    first: int
    seeds: int = 0
    steps: int = 0
    schedules: set[int] = field(default_factory=set)
    faults: Counter[str] = field(default_factory=Counter)
    failure: tuple[int, str, list[str]] | None = None
    """(seed, violation, trace) of the first failing schedule."""
    failures: int = 0
    """Failing schedules (more than one only where the run did not stop at the first)."""

    def line(self, seconds: float) -> str:
        faults = " ".join(f"{kind}={n}" for kind, n in sorted(self.faults.items()))
        verdict = "FAILED" if self.failure else "ok"
        return (
            f"simulate {verdict}: seeds {self.first}..{self.first + self.seeds - 1} "
            f"({self.seeds}), steps {self.steps}, schedules explored {len(self.schedules)}, "
            f"{seconds:.1f}s; faults: {faults}"
        )


@contextmanager
def quiet_logs() -> Iterator[None]:
    """The service logs every stage; a simulation of thousands of schedules reads none of it."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(previous)


def run_seeds(
    first: int, count: int, *, stop_on_failure: bool = True, progress_every: int = 0
) -> Summary:
    """Play seeds `first` .. `first + count - 1`; stops at the first violation. With
    `progress_every`, says on stderr how far a long run has come."""
    summary = Summary(first=first)
    with quiet_logs():
        for seed in range(first, first + count):
            world = World(seed)
            summary.seeds += 1
            try:
                world.run()
            except Violation as exc:
                summary.failures += 1
                if summary.failure is None:
                    summary.failure = (seed, str(exc), world.trace)
            summary.steps += world.step
            summary.faults.update(world.injected)
            summary.schedules.add(world.fingerprint)
            if summary.failure and stop_on_failure:
                break
            if progress_every and summary.seeds % progress_every == 0:
                print(f"... {summary.seeds} seeds, {summary.failures} failing", file=sys.stderr)
    return summary


def report(summary: Summary, seconds: float, *, whole: bool = False) -> str:
    """The one line, and on failure the replay command and the failing schedule's trace: the
    steps of the intents the violation names and the world's events (`whole`: every step)."""
    lines = [summary.line(seconds)]
    if summary.failure is not None:
        seed, violation, trace = summary.failure
        kept = trace if whole else minimal_trace(violation, trace)
        lines += [
            f"VIOLATION at seed {seed}: {violation}",
            f"replay: make simulate SEED={seed}",
            f"trace ({len(kept)} of {len(trace)} lines: the intents named and the world):",
            *kept,
        ]
    return "\n".join(lines)


def minimal_trace(violation: str, trace: list[str]) -> list[str]:
    """The lines of `trace` about the intents `violation` names, and the world's events."""
    intents = {f"({tenant}/{intent})" for tenant, intent in _INTENT.findall(violation)}
    if not intents:
        return trace
    return [
        line
        for line in trace
        if any(intent in line for intent in intents) or any(e in line for e in WORLD_EVENTS)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=1000, help="how many seeds to run")
    parser.add_argument("--first", type=int, default=0, help="the first seed")
    parser.add_argument("--seed", type=int, help="replay this one seed (full trace)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.seed is not None:
        summary = run_seeds(args.seed, 1)
        print(report(summary, time.perf_counter() - started, whole=True))
        if summary.failure is None:
            world = World(args.seed)
            with quiet_logs():
                world.run()
            print("\n".join(world.trace))
    else:
        summary = run_seeds(args.first, args.seeds, progress_every=10_000)
        print(report(summary, time.perf_counter() - started))
    return 1 if summary.failure else 0


if __name__ == "__main__":
    sys.exit(main())
