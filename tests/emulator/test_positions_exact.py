"""Positions in exact billionths of a share, on the emulator with the real adapters.

The position limit (`max_position_qty`) once summed share quantities in floats with a tolerance
of 1e-6, and the account-state document accumulated each symbol's position with float
increments. Quantities have at most 9 decimals (`MONEY_DECIMAL_PLACES`), so each position is a
whole number of billionths: stored as two integers per symbol (`execution.positions`), decided
exactly against the limit as written, and a float an earlier version stored keeps counting.
The document also has Firestore's 1 MiB limit, which a release that adds a symbol's position
must never meet (its whole batch would fail, and the placed order's record with it).
"""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from typing import Any

import pytest
from google.cloud import firestore

from execution.account_state import (
    FIRESTORE_DOCUMENT_LIMIT_BYTES,
    MAX_STATE_BYTES,
    stored_bytes,
)
from execution.clock import FakeClock
from execution.documents import state_from_document
from execution.errors import LimitWaitError
from execution.firestore.reservations import (
    BudgetRead,
    FirestoreReservationManager,
    budget_refs,
    inflight_ref,
)
from execution.models import Outcome
from execution.positions import BILLION, Position
from execution.reservations import Acquired, ReleaseResult, ReservationHandle, ReservationRequest
from tests.support.builders import FAST_POLICY, unique

TTL = timedelta(seconds=60)


class Account:
    """One account of one tenant, its limits, and a manager acquiring for it."""

    def __init__(self, db: firestore.Client, clock: FakeClock, **limits: Any) -> None:
        self.db = db
        self.tenant_id, self.account_id = unique("tenant"), unique("acct")
        if limits:
            db.collection("tenants", self.tenant_id, "accounts").document(self.account_id).set(
                limits
            )
        self.manager = FirestoreReservationManager(db, clock=clock, ttl=TTL, policy=FAST_POLICY)

    def request(self, qty: float, *, side: str = "buy", symbol: str = "AAPL") -> ReservationRequest:
        return ReservationRequest(
            tenant_id=self.tenant_id,
            broker_account_id=self.account_id,
            client_intent_id=unique("intent"),
            symbol=symbol,
            side=side,
            qty=qty,
            amount_usd=1.0,
            payload_hash="h" * 64,
        )

    def acquire(self, qty: float, **fields: Any) -> Acquired:
        acquired = self.manager.acquire(self.request(qty, **fields))
        assert isinstance(acquired, Acquired)
        return acquired

    def place(self, qty: float, **fields: Any) -> None:
        """An intent admitted, placed and released `placed`."""
        acquired = self.acquire(qty, **fields)
        assert acquired.refused is None, acquired.refused
        placed = acquired.handle.release(Outcome.PLACED, broker_order_id=uuid.uuid4().hex)
        assert placed is ReleaseResult.RECORDED

    @property
    def state_ref(self) -> firestore.DocumentReference:
        return inflight_ref(self.db, self.tenant_id, self.account_id)

    def stored(self) -> dict[str, Any]:
        return self.state_ref.get().to_dict() or {}

    def position(self, symbol: str = "AAPL") -> Position:
        return state_from_document(self.stored()).positions[symbol]


def shares(value: str) -> tuple[int, int]:
    """The bounds of an exact position of `value` shares, in billionths."""
    whole, _, fraction = value.partition(".")
    exact = int(whole) * BILLION + int((fraction + "0" * 9)[:9])
    return exact, exact


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_a_buy_a_billionth_past_the_position_limit_is_refused(
    db: firestore.Client, clock: FakeClock
) -> None:
    account = Account(db, clock, max_position_qty=10)

    acquired = account.acquire(10.000000999)

    assert acquired.refused == "max_position_exceeded: 10.000000999 > 10"


def a_hundred_tenths_under_a_limit_of_10(db: firestore.Client, clock: FakeClock) -> Account:
    """An account with `max_position_qty: 10` and a hundred buys of 0.1 placed."""
    account = Account(db, clock, max_position_qty=10)
    for _ in range(100):
        account.place(0.1)
    return account


def test_a_position_of_a_hundred_tenths_sits_at_its_limit_and_one_billionth_more_is_refused(
    db: firestore.Client, clock: FakeClock
) -> None:
    account = a_hundred_tenths_under_a_limit_of_10(db, clock)

    one_more = account.acquire(0.000000001)

    assert account.position().bounds() == shares("10")
    assert one_more.refused == "max_position_exceeded: 10.000000001 > 10"


def test_a_sell_from_a_position_at_its_limit_is_admitted_and_stored_exactly(
    db: firestore.Client, clock: FakeClock
) -> None:
    account = a_hundred_tenths_under_a_limit_of_10(db, clock)

    account.place(0.3, side="sell")
    account.place(0.000000001)

    assert account.position().bounds() == shares("9.700000001")


def test_a_float_position_an_earlier_version_stored_keeps_counting(
    db: firestore.Client, clock: FakeClock
) -> None:
    account = Account(db, clock, max_position_qty=10)
    account.state_ref.set({"positions": {"AAPL": 9.5}})  # as `Increment(9.5)` left it

    account.place(0.5)
    one_more = account.acquire(0.000000001)

    assert account.position().bounds() == shares("10")
    assert account.stored()["positions"] == {"AAPL": 9.5}  # never rewritten: read as it is
    assert one_more.refused == "max_position_exceeded: 10.000000001 > 10"


def test_a_drifted_float_position_counts_as_the_billionths_around_it_on_the_worse_side(
    db: firestore.Client, clock: FakeClock
) -> None:
    account = Account(db, clock, max_position_qty=10)
    # A hundred float increments of 0.1 leave 9.99999999999998: the true sum was 10.
    drifted = 0.0
    for _ in range(100):
        drifted += 0.1
    account.state_ref.set({"positions": {"AAPL": drifted}})

    buy = account.acquire(0.000000001)
    sell = account.acquire(20, side="sell")

    assert account.position().bounds() == (9_999_999_999, 10 * BILLION)
    assert buy.refused == "max_position_exceeded: 10.000000001 > 10"
    assert sell.refused == "max_position_exceeded: 10.000000001 > 10"


def test_concurrent_releases_add_billionths_to_a_large_position_exactly(
    db: firestore.Client, clock: FakeClock
) -> None:
    # No limit: each release increments without reading. At ten million shares a float's step
    # is about 2 billionths, so float increments of one billionth are lost or doubled.
    account = Account(db, clock)
    account.place(10_000_000)
    handles: list[ReservationHandle] = [account.acquire(0.000000001).handle for _ in range(16)]
    start = threading.Barrier(len(handles))
    answers: list[ReleaseResult] = []

    def release(handle: ReservationHandle) -> None:
        start.wait()
        answers.append(handle.release(Outcome.PLACED, broker_order_id=uuid.uuid4().hex))

    threads = [threading.Thread(target=release, args=(handle,)) for handle in handles]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert answers == [ReleaseResult.RECORDED] * len(handles)
    assert account.position().bounds() == shares("10000000.000000016")


def document_size(snap: firestore.DocumentSnapshot[Any]) -> int:
    """The stored document's size by Firestore's rules (as `test_state_document_cap` counts)."""
    segments = snap.reference.path.split("/")
    return sum(stored_bytes(s) for s in segments) + 16 + 32 + stored_bytes(snap.to_dict() or {})


def filled_with_positions(account: Account, size: int, *, closed: bool = False) -> list[str]:
    """Write `account`'s state document with open (or `closed`: zero) positions of many
    symbols, up to `size` bytes as Firestore counts them; the symbols written."""
    symbols: list[str] = []
    exact: dict[str, dict[str, int]] = {}
    per_symbol = stored_bytes({"S" * 32: {"shares": 0, "billionths": 0}})
    name = sum(stored_bytes(s) for s in account.state_ref.path.split("/")) + 16 + 32
    written = name + stored_bytes({"exact_positions": {}})
    while written + per_symbol <= size:
        symbol = uuid.uuid4().hex.upper()
        exact[symbol] = {"shares": 0 if closed else 1, "billionths": 0}
        symbols.append(symbol)
        written += per_symbol
    document = {"exact_positions": exact}
    account.state_ref.set(document)
    return symbols


def test_an_account_without_limits_whose_document_is_full_refuses_a_new_symbol_named(
    db: firestore.Client, clock: FakeClock
) -> None:
    account = Account(db, clock)
    held = filled_with_positions(account, FIRESTORE_DOCUMENT_LIMIT_BYTES - 100)
    before = account.state_ref.get()

    new_symbol = account.acquire(1, symbol="NEWSYMBOL")
    old_symbol = account.acquire(1, symbol=held[0])
    released = old_symbol.handle.release(Outcome.PLACED, broker_order_id="order-1")

    assert new_symbol.refused is not None
    assert new_symbol.refused.startswith("account_state_full: ")
    ended = new_symbol.handle.release(Outcome.REJECTED)  # its record ends like any refusal
    assert ended is ReleaseResult.RECORDED
    assert old_symbol.refused is None and released is ReleaseResult.RECORDED
    after = account.state_ref.get()
    assert set(state_from_document(after.to_dict()).positions) == set(held)
    # Only the day's order count arrived (its map's name, and one day's key and count).
    assert document_size(after) == document_size(before) + stored_bytes(
        {"placed_orders": {"YYYY-MM-DD": 1}}
    )
    assert account.position(held[0]).bounds() == shares("2")


def test_a_new_symbol_takes_room_that_closed_positions_leave_and_its_release_lands(
    db: firestore.Client, clock: FakeClock
) -> None:
    account = Account(db, clock)
    closed = filled_with_positions(account, MAX_STATE_BYTES + 50_000, closed=True)

    acquired = account.acquire(1, symbol="NEWSYMBOL")
    released = acquired.handle.release(Outcome.PLACED, broker_order_id="order-1")

    assert acquired.refused is None and released is ReleaseResult.RECORDED
    after = account.state_ref.get()
    assert document_size(after) < MAX_STATE_BYTES
    assert account.position("NEWSYMBOL").bounds() == shares("1")
    assert not set(closed) & set(state_from_document(after.to_dict()).positions)


def test_intents_on_new_symbols_of_an_account_without_limits_stop_at_the_cap(
    db: firestore.Client, clock: FakeClock
) -> None:
    # Intents in flight at once, each on a symbol the document does not hold yet: each holds
    # its room, so their releases together can never take the document past the cap.
    account = Account(db, clock)
    held = filled_with_positions(account, MAX_STATE_BYTES - 2_000)
    admitted: list[Acquired] = []
    with pytest.raises(LimitWaitError) as full:
        for _ in range(40):
            admitted.append(account.acquire(1, symbol=uuid.uuid4().hex.upper()))
    for one in admitted:
        assert one.refused is None
        placed = one.handle.release(Outcome.PLACED, broker_order_id=uuid.uuid4().hex)
        assert placed is ReleaseResult.RECORDED

    assert str(full.value).startswith("account_state_full: ")
    assert 0 < len(admitted) < 40
    assert len(state_from_document(account.stored()).positions) == len(held) + len(admitted)
    assert document_size(account.state_ref.get()) <= MAX_STATE_BYTES


def test_a_removal_of_closed_positions_never_loses_an_increment_that_landed_after_its_read(
    db: firestore.Client, clock: FakeClock
) -> None:
    account = Account(db, clock)
    closed = filled_with_positions(account, MAX_STATE_BYTES + 50_000, closed=True)
    account_doc, state_doc = budget_refs(db, account.tenant_id, account.account_id)
    stale = BudgetRead(account_doc.get(), state_doc.get())  # every position closed, as read
    account.place(1, symbol=closed[0])  # no hold: its symbol has an entry; increments it

    acquired = account.manager.acquire(account.request(1, symbol="NEWSYMBOL"), budget_read=stale)

    assert acquired.refused is None
    positions = state_from_document(account.stored()).positions
    assert positions[closed[0]].bounds() == shares("1")
    assert not set(closed[1:]) & set(positions)
