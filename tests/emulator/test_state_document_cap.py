"""The account-state document stays under Firestore's 1 MiB limit (emulator, real adapters).

Holds of unknown fate can pile up during a broker outage. Each admission is decided on the size
of the document it would write (`execution.account_state.MAX_STATE_BYTES`): past the cap the
intent waits, named `account_state_full`, and nothing is written. Filled to the cap with the
largest entries the contract allows (ids of 128 characters, symbols of 32), the document is
measured as stored, by Firestore's storage-size rules, and a release that turns a hold into a
position under a new symbol shrinks it (each hold's room counts the position entry its order
may add, `tests/emulator/test_positions_exact.py`).
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from google.cloud import firestore

from execution.account_state import (
    FIRESTORE_DOCUMENT_LIMIT_BYTES,
    MAX_STATE_BYTES,
    AccountState,
    Lease,
    state_bytes,
    stored_bytes,
)
from execution.clock import FakeClock
from execution.documents import leases_to_document, state_from_document
from execution.errors import LimitWaitError
from execution.firestore.reservations import FirestoreReservationManager, inflight_ref
from execution.models import Outcome
from execution.reservations import Acquired, ReservationRequest
from tests.support.builders import FAST_POLICY, unique

TTL = timedelta(seconds=30)


def longest(prefix: str, length: int = 128) -> str:
    """A unique id of `length` characters."""
    made = unique(prefix)
    return made + "x" * (length - len(made))


def longest_symbol() -> str:
    return uuid.uuid4().hex.upper()  # 32 characters, the contract's longest symbol


def request(tenant_id: str, account_id: str) -> ReservationRequest:
    return ReservationRequest(
        tenant_id=tenant_id,
        broker_account_id=account_id,
        client_intent_id=longest("intent"),
        symbol=longest_symbol(),
        side="sell",
        qty=1.0,
        amount_usd=1.0,
        payload_hash="h" * 64,
    )


def held(req: ReservationRequest, clock: FakeClock) -> Lease:
    return Lease(req.client_intent_id, req.amount_usd, clock() + TTL, req.symbol, req.side, req.qty)


def measured_bytes(snap: firestore.DocumentSnapshot[Any]) -> int:
    """The stored document's size by Firestore's rules: its name's segments, plus 16, 32, and
    its fields (an independent count of what `state_bytes` bounds)."""
    segments = snap.reference.path.split("/")
    return sum(stored_bytes(s) for s in segments) + 16 + 32 + stored_bytes(snap.to_dict() or {})


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_an_account_filled_to_the_cap_waits_named_and_its_document_stays_under_the_limit(
    db: firestore.Client, clock: FakeClock
) -> None:
    tenant_id, account_id = longest("tenant"), longest("account")
    db.collection("tenants", tenant_id, "accounts").document(account_id).set(
        {"max_daily_orders": 1_000_000}
    )
    # Holds of unknown fate left by a long broker outage, written as admissions write them,
    # up to a few entries short of the cap.
    seeded: dict[str, Lease] = {}
    while state_bytes(AccountState(seeded)) < MAX_STATE_BYTES - 3 * 400:
        seeded[uuid.uuid4().hex] = held(request(tenant_id, account_id), clock)
    state = inflight_ref(db, tenant_id, account_id)
    state.set(
        {
            "tenant_id": tenant_id,
            "broker_account_id": account_id,
            "updated_at": clock(),
            "leases": leases_to_document(seeded),
            "positions": {},
            "placed_orders": {},
        }
    )
    manager = FirestoreReservationManager(db, clock=clock, ttl=TTL, policy=FAST_POLICY)

    admitted: list[Acquired] = []
    with pytest.raises(LimitWaitError) as full:
        for _ in range(10):
            acquired = manager.acquire(request(tenant_id, account_id))
            assert isinstance(acquired, Acquired) and acquired.refused is None
            admitted.append(acquired)
    at_cap = state.get()
    last = admitted[-1].handle
    assert last.release(Outcome.PLACED, broker_order_id="order-1")
    after_release = state.get()

    assert str(full.value).startswith("account_state_full: ")
    assert "waiting until some end" in str(full.value)
    assert 1 <= len(admitted) <= 4
    largest = measured_bytes(at_cap)
    # Accounted: the document as stored, and the position entry each hold's order may add.
    accounted = state_bytes(state_from_document(at_cap.to_dict()))
    assert MAX_STATE_BYTES - 500 < accounted <= MAX_STATE_BYTES < FIRESTORE_DOCUMENT_LIMIT_BYTES
    assert largest < accounted
    assert measured_bytes(after_release) < largest
    assert len(at_cap.get("leases")) == len(seeded) + len(admitted)
