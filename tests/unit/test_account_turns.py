"""`AccountTurns`: one writer per account at a time; a wait is reported, and bounded."""

from __future__ import annotations

import threading

from execution.firestore.account_turns import AccountTurns


def test_a_free_turn_is_taken_without_waiting() -> None:
    turns = AccountTurns()

    with turns.turn("t", "a") as waited:
        pass

    assert waited is False


def test_a_writer_behind_another_waits_for_its_turn_and_says_so() -> None:
    turns = AccountTurns(timeout_seconds=30.0)
    waits: list[bool] = []
    order: list[str] = []

    def first() -> None:
        with turns.turn("t", "a") as waited:
            waits.append(waited)
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


def enter(turns: AccountTurns) -> bool:
    with turns.turn("t", "a") as waited:
        return waited
