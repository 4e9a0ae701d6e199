"""`AccountTurns`: one writer per account at a time; a wait is reported, and bounded; a state
handed over reaches the next writer of the same account only, once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from execution.account_state import AccountState
from execution.firestore.account_turns import AccountTurns, KnownState, Queued, Turn
from tests.support.waiting import wait_until


def known(version: int) -> KnownState:
    reference: Any = f"tenants/t/execution_inflight/a#{version}"  # stands for a reference
    return KnownState(reference, AccountState(), version)


def test_a_free_turn_is_taken_without_waiting() -> None:
    turns = AccountTurns()

    with turns.turn("t", "a") as turn:
        pass

    assert (turn.waited, turn.handed) == (False, None)


def test_a_writer_behind_another_waits_for_its_turn_and_says_so() -> None:
    turns = AccountTurns(timeout_seconds=30.0)
    waits: list[bool] = []
    order: list[str] = []

    def first() -> None:
        with turns.turn("t", "a") as turn:
            waits.append(turn.waited)
            order.append("first")

    with turns.turn("t", "a"):
        thread = threading.Thread(target=first)
        thread.start()
        order.append("holder")
    thread.join(timeout=30)

    assert order == ["holder", "first"]
    assert waits == [True]


def test_with_no_timeout_a_held_turn_is_never_waited_for() -> None:
    turns = AccountTurns(timeout_seconds=0.0)
    answers: list[bool] = []

    with turns.turn("t", "a"):
        thread = threading.Thread(target=lambda: answers.append(enter(turns)))
        thread.start()
        thread.join(timeout=30)

    assert answers == [False]


def test_the_state_a_writer_hands_over_reaches_the_next_writer_of_that_account_once() -> None:
    turns = AccountTurns()

    with turns.turn("t", "a") as first:
        first.hand_over(known(1))
    with turns.turn("t", "a") as second:
        pass
    with turns.turn("t", "a") as third:
        pass

    assert (first.handed, second.handed, third.handed) == (None, known(1), None)


def test_a_state_handed_over_never_reaches_another_account_sharing_the_stripe() -> None:
    turns = AccountTurns(stripes=1)

    with turns.turn("t", "a") as first:
        first.hand_over(known(1))
    with turns.turn("t", "b") as other:
        pass

    assert other.handed is None


def test_a_writer_that_went_ahead_without_the_turn_hands_nothing_over() -> None:
    turns = AccountTurns(timeout_seconds=0.0)
    handed: list[KnownState | None] = []

    def barge() -> None:
        with turns.turn("t", "a") as turn:
            handed.append(turn.handed)
            turn.hand_over(known(2))

    with turns.turn("t", "a") as holder:
        holder.hand_over(known(1))
        thread = threading.Thread(target=barge)
        thread.start()
        thread.join(timeout=30)
    with turns.turn("t", "a") as after:
        pass

    assert handed == [None]
    assert after.handed == known(1)


def enter(turns: AccountTurns) -> bool:
    with turns.turn("t", "a") as turn:
        return turn.waited


def line_up(turns: AccountTurns, works: list[Queued], writer: Callable[[int], None]) -> None:
    """Start one `writer(n)` per work behind a turn held here; let them go once all wait."""
    with turns.turn("t", "a"):
        threads = [threading.Thread(target=writer, args=(n,)) for n in range(len(works))]
        for thread in threads:
            thread.start()
        wait_until(
            lambda: turns.waiting("t", "a") == len(works),
            timeout=30,
            what="every writer in line",
            interval=0.001,
        )
    for thread in threads:
        thread.join(timeout=30)


def test_the_holder_claims_the_work_waiting_in_line_and_what_it_carries_is_picked_up() -> None:
    turns = AccountTurns(timeout_seconds=30.0)
    works = [Queued() for _ in range(3)]
    seen: dict[int, Turn] = {}

    def writer(n: int) -> None:
        with turns.turn("t", "a", works[n]) as turn:
            seen[n] = turn
            for work in turn.claimed:
                if work is not works[n]:
                    work.settle(carried=True)  # the writer whose turn comes carries the others

    line_up(turns, works, writer)

    leaders = [n for n, turn in seen.items() if turn.held]
    assert len(leaders) == 1
    assert len(seen[leaders[0]].claimed) == 3
    assert [turn.held for n, turn in seen.items() if n not in leaders] == [False, False]
    assert all(work.carried for n, work in enumerate(works) if n not in leaders)
    assert turns.waiting("t", "a") == 0


def test_work_the_holder_did_not_carry_is_left_to_its_writer_with_the_turn() -> None:
    turns = AccountTurns(timeout_seconds=30.0)
    works = [Queued() for _ in range(2)]
    held: list[bool] = []

    def writer(n: int) -> None:
        with turns.turn("t", "a", works[n]) as turn:
            held.append(turn.held)

    line_up(turns, works, writer)

    assert held == [True, True]  # each did its own work, in turn
    assert [(work.settled, work.carried) for work in works] == [(True, False), (True, False)]


def test_with_no_timeout_work_never_lines_up() -> None:
    turns = AccountTurns(timeout_seconds=0.0)

    with turns.turn("t", "a", Queued()) as turn:
        waiting = turns.waiting("t", "a")

    assert (turn.held, turn.claimed, waiting) == (True, [], 0)
