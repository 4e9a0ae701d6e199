"""The baton: one actor runs at a time, and a schedule's parked actors never act after it ends."""

from __future__ import annotations

from tests.simulation.scheduler import Actor, Scheduler


def test_actors_run_only_while_they_hold_the_baton() -> None:
    scheduler = Scheduler()
    steps: list[str] = []

    def body(name: str) -> None:
        for n in range(2):
            steps.append(f"{name}{n}")
            scheduler.point()

    first = scheduler.spawn(Actor(name="a", kind="delivery", body=lambda: body("a")))
    second = scheduler.spawn(Actor(name="b", kind="delivery", body=lambda: body("b")))
    for actor in (first, second, second, first, first, second):
        scheduler.run(actor)
    scheduler.close()

    assert steps == ["a0", "b0", "b1", "a1"]
    assert (first.state, second.state) == ("done", "done")


def test_a_parked_actor_unwinds_at_close_without_acting_again() -> None:
    scheduler = Scheduler()
    effects: list[str] = []

    def body() -> None:
        try:
            for n in range(3):
                scheduler.point()
                effects.append(f"call {n}")
        finally:
            scheduler.point()  # a `finally` that touches the world: raises, acts not
            effects.append("finally acted")

    actor = scheduler.spawn(Actor(name="killed", kind="delivery", body=body))
    scheduler.run(actor)
    scheduler.run(actor)
    scheduler.close()

    assert effects == ["call 0"]
    assert actor.state == "ready"  # never ended: a SIGKILLed process
    assert actor.error is None
