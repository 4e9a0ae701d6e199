"""The line behind a writer of a limited account: releases and acquires carried in one commit.

Against the Firestore emulator through the real reservations adapter. The test holds the
account's turn (`AccountTurns.turn`) while threads line up behind it, each with one release or
one fresh acquire, and lets them go once all wait (`AccountTurns.waiting`): the writer whose turn
comes carries every piece in one batch that writes the account's state once. One commit shows
as one `update_time` shared by every document it wrote. Where that batch fails as a whole (a
fenced release, a redelivery, an answer lost after it landed), every writer does its own alone,
and each outcome lands exactly once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud import firestore

from execution.account_state import utc_day
from execution.clock import FakeClock
from execution.firestore.account_turns import AccountTurns
from execution.firestore.reservations import (
    BudgetRead,
    FirestoreReservationManager,
    budget_refs,
    inflight_ref,
)
from execution.firestore.staged_writes import StagedWrites
from execution.models import Outcome
from execution.reservations import (
    Acquired,
    AlreadyExecuted,
    ReleaseResult,
    ReservationHandle,
    ReservationRequest,
)
from tests.support.builders import FAST_POLICY, reservation, unique
from tests.support.positions import positions_of
from tests.support.waiting import wait_until

TTL = timedelta(seconds=30)
LIMITS = {"max_inflight_usd": 100.0, "max_daily_orders": 50, "max_position_qty": 50.0}
TENANT = "tenant-line"


@dataclass
class Account:
    """One limited account, one instance: its client, clock, turns and manager."""

    db: firestore.Client
    clock: FakeClock
    account_id: str
    turns: AccountTurns
    manager: FirestoreReservationManager

    def buy(self, amount_usd: float = 20.0) -> ReservationRequest:
        return ReservationRequest(
            TENANT,
            self.account_id,
            unique("intent"),
            "AAPL",
            amount_usd,
            "hash-1",
            side="buy",
            qty=1.0,
        )

    def acquired(self, request: ReservationRequest, **kw: Any) -> ReservationHandle:
        answer = self.manager.acquire(request, **kw)
        assert isinstance(answer, Acquired) and answer.refused is None, answer
        return answer.handle

    def opening_read(self) -> BudgetRead:
        account, state = budget_refs(self.db, TENANT, self.account_id)
        snaps = {snap.reference.path: snap for snap in self.db.get_all([account, state])}
        return BudgetRead(snaps[account.path], snaps[state.path])

    def state(self) -> dict[str, Any]:
        return inflight_ref(self.db, TENANT, self.account_id).get().to_dict() or {}

    def lease_intents(self) -> list[str]:
        return sorted(lease["client_intent_id"] for lease in self.state()["leases"].values())

    def update_times(self, paths: list[str]) -> set[Any]:
        refs = [self.db.document(path) for path in paths]
        refs.append(inflight_ref(self.db, TENANT, self.account_id))
        return {snap.update_time for snap in self.db.get_all(refs)}

    def in_line(self, jobs: list[Callable[[], Any]]) -> list[Any]:
        """Run `jobs` from threads that line up behind a turn the test holds; then let them go.
        Each job's answer (or what it raised), in order."""
        answers: list[Any] = [None] * len(jobs)

        def run(index: int) -> None:
            try:
                answers[index] = jobs[index]()
            except Exception as exc:  # reported with the answers
                answers[index] = exc

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
        with self.turns.turn(TENANT, self.account_id):
            for thread in threads:
                thread.start()
            wait_until(
                lambda: self.turns.waiting(TENANT, self.account_id) == len(jobs),
                timeout=60,
                what="every writer in line",
                interval=0.001,
            )
        for thread in threads:
            thread.join(timeout=60)
        return answers


@pytest.fixture
def account(db: firestore.Client) -> Account:
    clock = FakeClock()
    turns = AccountTurns()
    manager = FirestoreReservationManager(db, clock=clock, ttl=TTL, policy=FAST_POLICY, turns=turns)
    rig = Account(db, clock, unique("acct"), turns, manager)
    db.collection("tenants", TENANT, "accounts").document(rig.account_id).set(LIMITS)
    return rig


def res_path(request: ReservationRequest) -> str:
    return f"tenants/{TENANT}/execution_reservations/{request.client_intent_id}"


def ledger_path(request: ReservationRequest) -> str:
    return f"tenants/{TENANT}/ledger_trades/o-{request.client_intent_id}"


def with_ledger_rider(db: firestore.Client, request: ReservationRequest) -> StagedWrites:
    """The ledger entry the engine stages to ride on the placed release's batch."""
    riders = StagedWrites()
    riders.stage_merge(
        db.document(ledger_path(request)), {"client_intent_id": request.client_intent_id}
    )
    return riders


def acquire(account: Account, request: ReservationRequest, read: BudgetRead) -> Callable[[], Any]:
    return lambda: account.manager.acquire(request, budget_read=read)


def release(handle: ReservationHandle, outcome: Outcome = Outcome.PLACED) -> Callable[[], Any]:
    order = f"o-{handle.lease_id}" if outcome is Outcome.PLACED else None
    return lambda: handle.release(outcome, broker_order_id=order)


def test_releases_waiting_in_line_end_with_the_state_and_their_ledger_entries_in_one_commit(
    account: Account,
) -> None:
    requests = [account.buy() for _ in range(4)]
    handles = [account.acquired(r, riders=with_ledger_rider(account.db, r)) for r in requests]

    answers = account.in_line([release(handle) for handle in handles])

    assert answers == [ReleaseResult.RECORDED] * 4
    # One commit ended the four records, wrote the state and the ledger entries it carried.
    paths = [res_path(r) for r in requests] + [ledger_path(r) for r in requests]
    assert len(account.update_times(paths)) == 1
    state = account.state()
    assert state["leases"] == {}
    assert positions_of(state) == {"AAPL": 4.0}
    assert state["placed_orders"] == {utc_day(account.clock()): 4}
    for request in requests:
        assert reservation(account.db, TENANT, request.client_intent_id)["outcome"] == "placed"


def test_a_line_of_releases_and_fresh_acquires_commits_once(account: Account) -> None:
    placed, rejected = account.buy(), account.buy()
    held = [account.acquired(placed), account.acquired(rejected)]
    fresh = [account.buy(), account.buy()]
    reads = [account.opening_read() for _ in fresh]
    jobs = [release(held[0]), release(held[1], Outcome.REJECTED)]
    jobs += [acquire(account, r, read) for r, read in zip(fresh, reads, strict=True)]

    answers = account.in_line(jobs)

    assert answers[:2] == [ReleaseResult.RECORDED, ReleaseResult.RECORDED]
    assert all(isinstance(a, Acquired) and a.refused is None for a in answers[2:]), answers
    all_four = [res_path(r) for r in (placed, rejected, *fresh)]
    assert len(account.update_times(all_four)) == 1
    assert account.lease_intents() == sorted(r.client_intent_id for r in fresh)
    assert positions_of(account.state()) == {"AAPL": 1.0}
    assert reservation(account.db, TENANT, rejected.client_intent_id)["outcome"] == "rejected"


def test_a_fenced_release_in_line_leaves_the_others_released_and_itself_fenced(
    account: Account,
) -> None:
    taken = account.buy()
    stale = account.acquired(taken)
    account.clock.advance(TTL.total_seconds() + 1)  # its lease lapses
    others = [account.buy(), account.buy()]
    handles = [account.acquired(r) for r in others]
    newer = account.acquired(taken)  # a redelivery takes the lapsed lease over

    answers = account.in_line([release(stale), *(release(h) for h in handles)])

    assert answers == [ReleaseResult.FENCED, ReleaseResult.RECORDED, ReleaseResult.RECORDED]
    record = reservation(account.db, TENANT, taken.client_intent_id)
    assert (record["status"], record["lease_id"]) == ("reserved", newer.lease_id)
    assert list(account.state()["leases"]) == [newer.lease_id]
    assert positions_of(account.state()) == {"AAPL": 2.0}
    for request in others:
        assert reservation(account.db, TENANT, request.client_intent_id)["outcome"] == "placed"


def test_a_redelivery_in_line_sends_each_writer_to_do_its_own(account: Account) -> None:
    done = account.buy()
    account.acquired(done).release(Outcome.PLACED, broker_order_id="o-done")
    held = [account.acquired(account.buy()) for _ in range(2)]
    fresh = account.buy()
    reads = [account.opening_read(), account.opening_read()]

    answers = account.in_line(
        [
            acquire(account, done, reads[0]),
            *(release(h) for h in held),
            acquire(account, fresh, reads[1]),
        ]
    )

    # The redelivery's `create` fails the batch; alone, it is the duplicate, the rest land.
    assert isinstance(answers[0], AlreadyExecuted), answers
    assert answers[1:3] == [ReleaseResult.RECORDED, ReleaseResult.RECORDED]
    assert isinstance(answers[3], Acquired), answers
    assert account.lease_intents() == [fresh.client_intent_id]
    state = account.state()
    assert positions_of(state) == {"AAPL": 3.0}
    assert state["placed_orders"] == {utc_day(account.clock()): 3}


@contextmanager
def answer_lost_after_commit(db: firestore.Client, *, writes: int) -> Iterator[list[int]]:
    """The first commit of at least `writes` writes lands on the emulator, and then its answer
    is lost (a deadline, as the client sees one after the commit may have landed). Yields the
    sizes of the commits whose answer was lost."""
    api = db._firestore_api
    commit = api.commit
    lost: list[int] = []

    def commit_then_lose(*args: Any, request: Any = None, **kwargs: Any) -> Any:
        answer = commit(*args, request=request, **kwargs)
        size = len(request["writes"] if isinstance(request, dict) else request.writes)
        if size >= writes and not lost:
            lost.append(size)
            raise gexc.DeadlineExceeded(  # type: ignore[no-untyped-call]
                "the commit's answer was lost after it landed"
            )
        return answer

    api.commit = commit_then_lose
    try:
        yield lost
    finally:
        api.commit = commit


def test_a_line_whose_commit_answer_is_lost_after_it_landed_lands_each_piece_once(
    account: Account,
) -> None:
    held_requests = [account.buy(), account.buy()]
    held = [account.acquired(r) for r in held_requests]
    fresh = [account.buy(), account.buy()]
    reads = [account.opening_read() for _ in fresh]
    jobs = [release(h) for h in held]
    jobs += [acquire(account, r, read) for r, read in zip(fresh, reads, strict=True)]

    with answer_lost_after_commit(account.db, writes=5) as lost:
        answers = account.in_line(jobs)

    assert lost == [5]  # the line's batch: four records and the state
    # Each writer did its own alone and learnt from its preconditions that it had landed.
    assert answers[:2] == [ReleaseResult.RECORDED, ReleaseResult.RECORDED]
    assert all(isinstance(a, Acquired) for a in answers[2:]), answers
    assert {a.handle.lease_id for a in answers[2:]} == set(account.state()["leases"])
    assert account.lease_intents() == sorted(r.client_intent_id for r in fresh)
    state = account.state()
    assert positions_of(state) == {"AAPL": 2.0}  # each placed order counted once
    assert state["placed_orders"] == {utc_day(account.clock()): 2}
    for request in held_requests:
        assert reservation(account.db, TENANT, request.client_intent_id)["outcome"] == "placed"


def test_releases_whose_version_is_unknown_end_alone_beside_a_line(account: Account) -> None:
    # The transactional peer's acquire hands back no write time: its release reads first.
    from bench.transactional_peer import TransactionalReservationManager

    peer = TransactionalReservationManager(
        account.db, clock=account.clock, ttl=TTL, policy=FAST_POLICY, turns=account.turns
    )
    requests = [account.buy() for _ in range(4)]
    handles = [account.acquired(r) for r in requests[:2]]
    for request in requests[2:]:
        answer = peer.acquire(request)
        assert isinstance(answer, Acquired), answer
        handles.append(answer.handle)

    answers = account.in_line([release(handle) for handle in handles])

    assert answers == [ReleaseResult.RECORDED] * 4
    assert account.state()["leases"] == {}
    assert positions_of(account.state()) == {"AAPL": 4.0}
