"""The account-state document is read whole or not at all: a number it holds that is not finite
(or a held amount below zero) never turns a limit check into "within the limit".

Against the real Firestore emulator through the real reservations adapter. Python compares NaN
as neither above nor below a limit, and a negative held amount frees budget that no lease gave
back; a state document holding either must stop the acquire (retried, nothing written), never
admit an intent past the account's limits.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest
from google.cloud import firestore

from execution.clock import FakeClock
from execution.firestore.reservations import FirestoreReservationManager
from execution.reservations import ReservationRequest
from tests.support.builders import FAST_POLICY, unique

TTL = timedelta(seconds=30)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def manager(db: firestore.Client, clock: FakeClock) -> FirestoreReservationManager:
    return FirestoreReservationManager(db, clock=clock, ttl=TTL, policy=FAST_POLICY)


def request_for(**overrides: Any) -> ReservationRequest:
    fields: dict[str, Any] = {
        "tenant_id": "tenant-d",
        "broker_account_id": unique("acct"),
        "client_intent_id": unique("intent"),
        "symbol": "AAPL",
        "amount_usd": 60.0,
        "payload_hash": "hash-1",
        "side": "buy",
        "qty": 20.0,
    }
    fields.update(overrides)
    return ReservationRequest(**fields)


def held(clock: FakeClock, amount_usd: float, qty: float = 1.0) -> dict[str, Any]:
    """A lease of another intent, in flight until after the test's acquire."""
    return {
        "client_intent_id": unique("other"),
        "amount_usd": amount_usd,
        "expires_at": clock() + TTL,
        "symbol": "AAPL",
        "side": "buy",
        "qty": qty,
    }


def store(
    db: firestore.Client,
    request: ReservationRequest,
    account: dict[str, Any],
    state: dict[str, Any],
) -> firestore.DocumentReference:
    """The account's limits and its state document; returns the state's reference."""
    tenant = db.collection("tenants").document(request.tenant_id)
    tenant.collection("accounts").document(request.broker_account_id).set(account)
    ref = tenant.collection("execution_inflight").document(request.broker_account_id)
    ref.set(
        {"tenant_id": request.tenant_id, "broker_account_id": request.broker_account_id, **state}
    )
    return ref


def reservation_exists(db: firestore.Client, request: ReservationRequest) -> bool:
    ref = db.collection("tenants", request.tenant_id, "execution_reservations")
    return bool(ref.document(request.client_intent_id).get().exists)


@pytest.mark.parametrize("amount", [math.nan, -1_000_000.0], ids=["NaN", "negative"])
def test_a_held_amount_that_is_not_a_finite_non_negative_number_admits_nothing(
    db: firestore.Client, manager: FirestoreReservationManager, clock: FakeClock, amount: float
) -> None:
    request = request_for()
    # 60 held + 60 asked > 100: this intent must wait, whatever the damaged lease says.
    state = store(
        db,
        request,
        {"max_inflight_usd": 100.0},
        {"leases": {"held-ok": held(clock, 60.0), "held-bad": held(clock, amount)}},
    )
    before = state.get().to_dict()

    with pytest.raises(ValueError) as raised:
        manager.acquire(request)

    assert "amount_usd" in str(raised.value)
    assert reservation_exists(db, request) is False
    assert str(state.get().to_dict()) == str(before)  # NaN != NaN: compare as written


def test_a_position_that_is_not_finite_admits_nothing_past_the_position_limit(
    db: firestore.Client, manager: FirestoreReservationManager, clock: FakeClock
) -> None:
    request = request_for(qty=20.0)  # 20 more shares where 10 is the most the account may hold
    store(db, request, {"max_position_qty": 10.0}, {"positions": {"AAPL": math.nan}})

    with pytest.raises(ValueError) as raised:
        manager.acquire(request)

    assert "positions.AAPL" in str(raised.value)
    assert reservation_exists(db, request) is False


def test_a_state_with_finite_numbers_still_decides_as_before(
    db: firestore.Client, manager: FirestoreReservationManager, clock: FakeClock
) -> None:
    request = request_for(amount_usd=30.0)
    state = store(
        db,
        request,
        {"max_inflight_usd": 100.0},
        {"leases": {"held-ok": held(clock, 60.0)}, "positions": {"AAPL": 2}},
    )

    manager.acquire(request)

    assert reservation_exists(db, request) is True
    leases = (state.get().to_dict() or {})["leases"]
    assert sorted(lease["amount_usd"] for lease in leases.values()) == [30.0, 60.0]
