"""The account-state document is read whole or not at all: a number it holds that is not finite
(or a held amount below zero) never turns a limit check into "within the limit".

Against the real Firestore emulator through the real reservations adapter. Python compares NaN
as neither above nor below a limit, and a negative held amount frees budget that no lease gave
back; a state document holding either must stop the acquire (a named wait, `LimitWaitError`:
retried, nothing written), never admit an intent past the account's limits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from google.cloud import firestore

from execution.clock import FakeClock
from execution.errors import LimitWaitError
from execution.firestore.reservations import FirestoreReservationManager
from execution.reservations import ReservationRequest
from tests.support.builders import FAST_POLICY, unique

TTL = timedelta(seconds=30)


@dataclass
class Rig:
    """The real reservations adapter on the emulator, on a clock the test holds."""

    db: firestore.Client
    clock: FakeClock
    manager: FirestoreReservationManager


@pytest.fixture
def rig(db: firestore.Client) -> Rig:
    clock = FakeClock()
    return Rig(db, clock, FirestoreReservationManager(db, clock=clock, ttl=TTL, policy=FAST_POLICY))


def buy(amount_usd: float, qty: float) -> ReservationRequest:
    """A fresh intent of a fresh account (so no test sees another's state)."""
    return ReservationRequest(
        "tenant-d",
        unique("acct"),
        unique("intent"),
        "AAPL",
        amount_usd,
        "hash-1",
        side="buy",
        qty=qty,
    )


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
    rig: Rig, amount: float
) -> None:
    request = buy(60.0, qty=1.0)
    # 60 held + 60 asked > 100: this intent must wait, whatever the damaged lease says.
    held_leases = {"held-ok": held(rig.clock, 60.0), "held-bad": held(rig.clock, amount)}
    state = store(rig.db, request, {"max_inflight_usd": 100.0}, {"leases": held_leases})
    before = state.get().to_dict()

    with pytest.raises(LimitWaitError) as raised:
        rig.manager.acquire(request)

    assert "amount_usd" in str(raised.value)
    assert reservation_exists(rig.db, request) is False
    assert str(state.get().to_dict()) == str(before)  # NaN != NaN: compare as written


def test_a_position_that_is_not_finite_admits_nothing_past_the_position_limit(rig: Rig) -> None:
    request = buy(60.0, qty=20.0)  # 20 more shares where 10 is the most the account may hold
    store(rig.db, request, {"max_position_qty": 10.0}, {"positions": {"AAPL": math.nan}})

    with pytest.raises(LimitWaitError) as raised:
        rig.manager.acquire(request)

    assert "positions.AAPL" in str(raised.value)
    assert reservation_exists(rig.db, request) is False


def test_a_state_with_finite_numbers_still_decides_as_before(rig: Rig) -> None:
    request = buy(30.0, qty=1.0)
    state = store(
        rig.db,
        request,
        {"max_inflight_usd": 100.0},
        {"leases": {"held-ok": held(rig.clock, 60.0)}, "positions": {"AAPL": 2}},
    )

    rig.manager.acquire(request)

    assert reservation_exists(rig.db, request) is True
    leases = (state.get().to_dict() or {})["leases"]
    assert sorted(lease["amount_usd"] for lease in leases.values()) == [30.0, 60.0]
