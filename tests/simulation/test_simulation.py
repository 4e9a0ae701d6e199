"""The deterministic simulation in CI: the seed budget keeps every invariant, a seed replays its
schedule exactly, and every known-bad patch (`mutants`) is caught within the same budget."""

from __future__ import annotations

import pytest

from tests.simulation.mutants import (
    CI_SEEDS,
    MUTANTS,
    Mutant,
    applied,
    first_catch,
)
from tests.simulation.run import quiet_logs, report, run_seeds
from tests.simulation.world import World

FAULT_KINDS = {
    "store.unavailable",
    "store.unavailable_after_commit",
    "store.deadline_after_commit",
    "broker.place.server_error",
    "broker.place.timeout_after_accept",
    "broker.place.garbage_after_accept",
    "broker.place.refused",
    "broker.lookup.refused",
    "process.paused",
    "process.killed",
    "clock.jump",
    "clock.skew",
    "pubsub.duplicate",
    "pubsub.concurrent",
    "pubsub.after_ack",
    "sweep",
    "reconcile",
    "operator.kill_switch",
    "operator.limit",
    "turn.wait",
    "turn.timeout",
}
"""Every kind of event the issue asks the seed to decide; each must occur within the budget."""


def test_the_ci_seeds_keep_every_invariant() -> None:
    summary = run_seeds(0, CI_SEEDS)

    assert summary.failure is None, report(summary, 0.0)
    assert summary.seeds == CI_SEEDS
    assert len(summary.schedules) == CI_SEEDS  # no two seeds played the same schedule
    assert set(summary.faults) >= FAULT_KINDS, FAULT_KINDS - set(summary.faults)


def test_a_seed_replays_its_schedule_step_for_step() -> None:
    with quiet_logs():
        first = World(41).run()
        second = World(41).run()

    assert first.trace == second.trace
    assert first.broker.orders == second.broker.orders
    assert first.db.dump() == second.db.dump()


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_the_ci_seeds_catch_a_known_bad_patch(mutant: Mutant) -> None:
    caught = first_catch(mutant, mutant.seeds)

    assert caught is not None, f"{mutant.name}: no violation in {mutant.seeds} seeds"


def test_a_caught_schedule_prints_its_replay_command_and_its_steps() -> None:
    with applied(MUTANTS[0]):
        summary = run_seeds(0, CI_SEEDS)
    assert summary.failure is not None
    seed = summary.failure[0]

    text = report(summary, 1.0)

    assert f"replay: make simulate SEED={seed}" in text
    assert "VIOLATION at seed" in text
    assert any(" acked " in line for line in text.splitlines()[4:])
