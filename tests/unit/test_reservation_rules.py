"""The reservation state machine (`decide_acquire`, `new_record`), the account limits decided at
acquire (`account_state.admit`) and the fail-open wrapper, without any store."""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime, timedelta

import pytest

from execution.account_state import (
    MAX_STATE_BYTES,
    AccountLimits,
    AccountState,
    Admitted,
    Lease,
    Refused,
    admit,
    counted_days,
    state_bytes,
    stored_bytes,
    utc_day,
)
from execution.clock import FakeClock
from execution.errors import (
    BudgetWaitError,
    InvalidIntentError,
    LimitWaitError,
    PayloadConflictError,
    ReservationContentionError,
    ReservationInFlightError,
    StoreUnavailableError,
)
from execution.models import RETRYABLE_OUTCOMES, TERMINAL_OUTCOMES, Outcome
from execution.positions import BILLION, Position, to_billionths
from execution.reservations import (
    AcquireAction,
    Acquired,
    AlreadyExecuted,
    BestEffortReservationManager,
    NoopHandle,
    ReservationRecord,
    ReservationStatus,
    decide_acquire,
    new_record,
)
from tests.unit.fakes import (
    T0,
    TTL,
    InMemoryReservationManager,
    RaisingHandle,
    ScriptedReservationManager,
    logged,
    make_record,
    make_request,
)

LATER = T0 + timedelta(seconds=30)
AFTER_EXPIRY = T0 + TTL + timedelta(seconds=1)


def released(
    outcome: Outcome, status: ReservationStatus = ReservationStatus.RELEASED
) -> ReservationRecord:
    """A reservation that ended with `outcome`."""
    return make_record(status=status, outcome=outcome, released_at=LATER)


# --- decide_acquire ------------------------------------------------------------------------


def test_an_absent_reservation_is_created() -> None:
    assert decide_acquire(None, make_request(), T0) is AcquireAction.CREATE


def test_a_reserved_unexpired_lease_is_in_flight() -> None:
    with pytest.raises(ReservationInFlightError) as raised:
        decide_acquire(make_record(), make_request(), LATER)

    assert "lease-0" in str(raised.value)


def test_a_reserved_lease_is_still_in_flight_one_instant_before_it_expires() -> None:
    with pytest.raises(ReservationInFlightError):
        decide_acquire(make_record(), make_request(), T0 + TTL - timedelta(microseconds=1))


def test_a_reserved_lease_is_taken_over_from_the_instant_it_expires() -> None:
    assert decide_acquire(make_record(), make_request(), T0 + TTL) is AcquireAction.TAKE_OVER


def test_a_reserved_expired_lease_is_taken_over() -> None:
    assert decide_acquire(make_record(), make_request(), AFTER_EXPIRY) is AcquireAction.TAKE_OVER


@pytest.mark.parametrize("outcome", sorted(TERMINAL_OUTCOMES))
def test_a_released_reservation_with_a_terminal_outcome_is_a_duplicate(outcome: Outcome) -> None:
    assert decide_acquire(released(outcome), make_request(), LATER) is AcquireAction.DUPLICATE


@pytest.mark.parametrize("outcome", sorted(TERMINAL_OUTCOMES))
def test_an_expired_reservation_with_a_terminal_outcome_is_a_duplicate(outcome: Outcome) -> None:
    record = released(outcome, ReservationStatus.EXPIRED)

    assert decide_acquire(record, make_request(), LATER) is AcquireAction.DUPLICATE


@pytest.mark.parametrize("status", [ReservationStatus.RELEASED, ReservationStatus.EXPIRED])
@pytest.mark.parametrize("outcome", sorted(RETRYABLE_OUTCOMES))
def test_a_reservation_ended_with_a_retryable_outcome_is_acquired_again(
    status: ReservationStatus, outcome: Outcome
) -> None:
    action = decide_acquire(released(outcome, status), make_request(), LATER)

    assert action is AcquireAction.TAKE_OVER


def test_the_terminal_outcomes_are_exactly_those_of_the_contract() -> None:
    assert {o.value for o in TERMINAL_OUTCOMES} == {
        "placed",
        "rejected",
        "dry_run",
        "halted",
        "stale",
    }


def test_the_retryable_outcomes_are_exception_and_expired() -> None:
    assert {o.value for o in RETRYABLE_OUTCOMES} == {"exception", "expired"}


@pytest.mark.parametrize(
    "record",
    [
        make_record(),
        make_record(expires_at=T0 - timedelta(seconds=1)),
        make_record(status=ReservationStatus.RELEASED, outcome=Outcome.PLACED),
        make_record(status=ReservationStatus.EXPIRED, outcome=Outcome.EXPIRED),
    ],
    ids=["reserved", "reserved-expired", "released-placed", "expired"],
)
def test_a_different_payload_under_the_same_id_is_a_conflict_in_every_state(
    record: ReservationRecord,
) -> None:
    with pytest.raises(PayloadConflictError) as raised:
        decide_acquire(record, make_request(payload_hash="other"), LATER)

    assert "new client_intent_id" in str(raised.value)


# --- new_record ----------------------------------------------------------------------------


def test_a_first_acquire_writes_attempt_one_reserved_until_now_plus_ttl() -> None:
    record = new_record(
        make_request(), previous=None, lease_id="l1", now=T0, ttl=TTL, counts_against_budget=False
    )

    assert (record.status, record.attempt, record.created_at, record.expires_at) == (
        ReservationStatus.RESERVED,
        1,
        T0,
        T0 + TTL,
    )


def test_a_take_over_increments_the_attempt_and_clears_the_previous_outcome() -> None:
    previous = released(Outcome.EXCEPTION)

    record = new_record(
        make_request(),
        previous=previous,
        lease_id="l2",
        now=LATER,
        ttl=TTL,
        counts_against_budget=True,
    )

    assert (record.attempt, record.lease_id, record.outcome, record.released_at) == (
        2,
        "l2",
        None,
        None,
    )


# --- admit: every account limit at acquire -------------------------------------------------


def lease(
    intent: str,
    amount: float = 1.0,
    *,
    expires_in: float = 60,
    side: str = "buy",
    qty: float = 1.0,
    symbol: str = "AAPL",
) -> Lease:
    return Lease(intent, amount, T0 + timedelta(seconds=expires_in), symbol, side, qty)


def admitted(state: AccountState, new: Lease, now: datetime = T0, **limits: float) -> Admitted:
    answer = admit(state, now=now, lease_id="new", lease=new, limits=AccountLimits(**limits))
    assert isinstance(answer, Admitted), answer
    return answer


def refused(state: AccountState, new: Lease, **limits: float) -> str:
    answer = admit(state, now=T0, lease_id="new", lease=new, limits=AccountLimits(**limits))
    assert isinstance(answer, Refused), answer
    return answer.reason


def test_a_lease_that_fits_is_added_beside_the_holds_whose_fate_is_unknown() -> None:
    state = AccountState({"a": lease("one", 400), "lapsed": lease("old", 900, expires_in=0)})

    answer = admitted(state, lease("two", 500), max_inflight_usd=1000)

    assert set(answer.leases) == {"a", "lapsed", "new"}


def test_a_lease_that_fills_the_budget_exactly_is_admitted() -> None:
    state = AccountState({"a": lease("one", 600)})

    answer = admitted(state, lease("two", 400), max_inflight_usd=1000)

    assert "new" in answer.leases


def test_cents_that_sum_to_the_budget_are_admitted_despite_float_error() -> None:
    # 0.33 + 0.56 + 0.11 is 1.0000000000000002 in binary floating point.
    state = AccountState({"a": lease("one", 0.33), "b": lease("two", 0.56)})

    assert "new" in admitted(state, lease("three", 0.11), max_inflight_usd=1.0).leases


def test_a_lease_over_the_budget_must_wait() -> None:
    state = AccountState({"a": lease("one", 600)})

    with pytest.raises(BudgetWaitError) as raised:
        admit(
            state,
            now=T0,
            lease_id="b",
            lease=lease("two", 400.01),
            limits=AccountLimits(max_inflight_usd=1000),
        )

    assert "holds 600 USD" in str(raised.value)


def test_a_lease_larger_than_the_whole_budget_is_refused_for_good() -> None:
    reason = refused(AccountState(), lease("two", 1001), max_inflight_usd=1000)

    assert reason == "max_inflight_usd_exceeded: 1001 > 1000 USD"


def test_an_expired_lease_stops_counting_at_once() -> None:
    state = AccountState({"a": lease("one", 900, expires_in=10)})

    answer = admitted(
        state, lease("two", 900, expires_in=600), T0 + timedelta(seconds=10), max_inflight_usd=1000
    )

    assert set(answer.leases) == {"a", "new"}  # its order's fate is still unknown


def test_a_lapsed_hold_keeps_counting_against_the_position_until_its_fate_is_known() -> None:
    state = AccountState({"a": lease("one", 100, expires_in=0, qty=2)})

    with pytest.raises(LimitWaitError) as raised:
        admit(
            state,
            now=T0 + timedelta(seconds=1),
            lease_id="b",
            lease=lease("two", 100, qty=2),
            limits=AccountLimits(max_position_qty=3),
        )

    assert "1 of unknown fate" in str(raised.value)


def test_a_lapsed_hold_keeps_counting_against_the_daily_orders_until_its_fate_is_known() -> None:
    state = AccountState({"a": lease("one", 100, expires_in=0)})

    with pytest.raises(LimitWaitError):
        admit(
            state,
            now=T0 + timedelta(seconds=1),
            lease_id="b",
            lease=lease("two", 100),
            limits=AccountLimits(max_daily_orders=1),
        )


def test_a_lapsed_lease_of_the_same_intent_is_replaced_not_counted_twice() -> None:
    answer = admitted(
        AccountState({"old": lease("one", 900)}), lease("one", 900), max_inflight_usd=1000
    )

    assert set(answer.leases) == {"new"}


def test_a_lease_stops_counting_the_instant_it_expires() -> None:
    state = AccountState({"a": lease("one", 100, expires_in=5), "b": lease("two", 50)})

    assert set(state.active(T0 + timedelta(seconds=5))) == {"b"}


@pytest.mark.parametrize(
    ("amount", "qty"), [(math.nan, 1.0), (math.inf, 1.0), (-1.0, 1.0), (1.0, math.nan), (1.0, -2.0)]
)
def test_a_non_finite_or_negative_amount_is_refused_rather_than_summed(
    amount: float, qty: float
) -> None:
    with pytest.raises(InvalidIntentError):
        admit(
            AccountState(),
            now=T0,
            lease_id="b",
            lease=lease("two", amount, qty=qty),
            limits=AccountLimits(max_inflight_usd=1000),
        )


def test_the_daily_limit_counts_intents_in_flight_and_waits_for_them() -> None:
    state = AccountState({"a": lease("one")}, placed_orders={utc_day(T0): 1})

    with pytest.raises(LimitWaitError) as raised:
        admit(
            state,
            now=T0,
            lease_id="b",
            lease=lease("two"),
            limits=AccountLimits(max_daily_orders=2),
        )

    assert not isinstance(raised.value, BudgetWaitError)


def test_the_daily_limit_refuses_once_placed_orders_fill_it() -> None:
    state = AccountState(placed_orders={utc_day(T0): 2})

    assert refused(state, lease("two"), max_daily_orders=2) == (
        "max_daily_orders_reached: 2 of 2 used today (UTC)"
    )


def test_yesterdays_orders_do_not_count_and_older_days_are_pruned() -> None:
    yesterday, before = utc_day(T0 - timedelta(days=1)), utc_day(T0 - timedelta(days=2))
    state = AccountState(placed_orders={before: 3, yesterday: 5})

    # Yesterday's count stays for an instance whose clock is still on yesterday at midnight.
    assert admitted(state, lease("two"), max_daily_orders=1).placed_orders == {
        yesterday: 5,
        utc_day(T0): 0,
    }


def test_a_day_ahead_of_this_clock_is_kept() -> None:
    tomorrow = utc_day(T0 + timedelta(days=1))
    state = AccountState(placed_orders={tomorrow: 1})

    assert admitted(state, lease("two"), max_daily_orders=1).placed_orders == {
        tomorrow: 1,
        utc_day(T0): 0,
    }


@pytest.mark.parametrize(
    ("recorded_at", "days"),
    [
        (datetime(2026, 1, 5, 23, 59, 54, tzinfo=UTC), ("2026-01-05",)),
        (datetime(2026, 1, 5, 23, 59, 55, tzinfo=UTC), ("2026-01-05", "2026-01-06")),
        (datetime(2026, 1, 6, 0, 0, 4, tzinfo=UTC), ("2026-01-05", "2026-01-06")),
        (datetime(2026, 1, 6, 0, 0, 5, tzinfo=UTC), ("2026-01-06",)),
    ],
)
def test_an_order_counts_on_every_day_within_the_clock_skew_of_its_recording(
    recorded_at: datetime, days: tuple[str, ...]
) -> None:
    assert counted_days(recorded_at, timedelta(seconds=5)) == days


@pytest.mark.parametrize(
    ("held", "side", "qty", "answer"),
    [
        (8.0, "buy", 2.0, "admitted"),  # reaches the limit exactly
        (8.0, "buy", 3.0, "refused"),  # over it
        (-8.0, "sell", 3.0, "refused"),  # over it short
        (12.0, "sell", 1.0, "admitted"),  # already over, but shrinking is always allowed
        (12.0, "buy", 1.0, "refused"),
        (-20.0, "buy", 25.0, "admitted"),  # from short 20 to long 5
    ],
)
def test_the_position_limit_bounds_the_net_position_placed(
    held: float, side: str, qty: float, answer: str
) -> None:
    state = AccountState(positions={"AAPL": Position(to_billionths(held))})

    decision = admit(
        state,
        now=T0,
        lease_id="b",
        lease=lease("two", side=side, qty=qty),
        limits=AccountLimits(max_position_qty=10),
    )

    assert type(decision).__name__.lower() == answer


def test_the_position_limit_counts_same_side_intents_in_flight_as_placed() -> None:
    state = AccountState(
        {
            "a": lease("one", qty=10),
            "b": lease("three", qty=5, side="sell"),
            "c": lease("four", qty=10, symbol="MSFT"),
        }
    )

    with pytest.raises(LimitWaitError):
        admit(
            state,
            now=T0,
            lease_id="n",
            lease=lease("two", qty=1),
            limits=AccountLimits(max_position_qty=10),
        )


def test_a_refusal_beats_a_wait() -> None:
    state = AccountState({"a": lease("one", 900)}, placed_orders={utc_day(T0): 3})

    assert refused(state, lease("two", 200), max_inflight_usd=1000, max_daily_orders=3).startswith(
        "max_daily_orders_reached"
    )


# --- the in-memory manager applies those rules ---------------------------------------------


def test_the_in_memory_manager_hands_out_attempt_one_on_first_acquire() -> None:
    manager = InMemoryReservationManager(FakeClock(T0))

    acquisition = manager.acquire(make_request())

    assert isinstance(acquisition, Acquired)
    assert (acquisition.handle.lease_id, acquisition.handle.attempt) == ("lease-1", 1)


def test_the_in_memory_release_is_idempotent() -> None:
    manager = InMemoryReservationManager(FakeClock(T0))
    acquisition = manager.acquire(make_request())
    assert isinstance(acquisition, Acquired)
    acquisition.handle.release(Outcome.PLACED, broker_order_id="o-1")

    acquisition.handle.release(Outcome.EXCEPTION, error="late")

    record = manager.records[("tenant-a", "intent-1")]
    assert (record.outcome, record.broker_order_id) == (Outcome.PLACED, "o-1")


def test_the_in_memory_release_is_fenced_against_a_newer_lease() -> None:
    clock = FakeClock(T0)
    manager = InMemoryReservationManager(clock)
    zombie = manager.acquire(make_request())
    assert isinstance(zombie, Acquired)
    clock.advance(TTL.total_seconds())
    manager.acquire(make_request())

    zombie.handle.release(Outcome.EXCEPTION, error="zombie")

    record = manager.records[("tenant-a", "intent-1")]
    assert (record.status, record.lease_id, record.attempt) == (
        ReservationStatus.RESERVED,
        "lease-2",
        2,
    )


# --- BestEffortReservationManager ----------------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [StoreUnavailableError("down"), ReservationContentionError("lost"), RuntimeError("bug")],
)
def test_best_effort_fails_open_with_a_noop_handle_when_acquire_fails(failure: Exception) -> None:
    manager = BestEffortReservationManager(ScriptedReservationManager(failure))

    acquisition = manager.acquire(make_request())

    assert isinstance(acquisition, Acquired)
    assert isinstance(acquisition.handle, NoopHandle)


def test_best_effort_logs_the_fail_open(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    manager = BestEffortReservationManager(ScriptedReservationManager(StoreUnavailableError("x")))

    manager.acquire(make_request())

    fail_opens = logged(caplog.records, "exec.reservation.fail_open")

    assert [f["client_intent_id"] for f in fail_opens] == ["intent-1"]


@pytest.mark.parametrize(
    "answer",
    [ReservationInFlightError("held"), BudgetWaitError("full"), PayloadConflictError("reused")],
)
def test_best_effort_passes_the_stores_answers_through(answer: Exception) -> None:
    manager = BestEffortReservationManager(ScriptedReservationManager(answer))

    with pytest.raises(type(answer)) as raised:
        manager.acquire(make_request())

    assert raised.value is answer


def test_best_effort_passes_an_already_executed_answer_through() -> None:
    record = released(Outcome.PLACED)
    manager = BestEffortReservationManager(ScriptedReservationManager(AlreadyExecuted(record)))

    acquisition = manager.acquire(make_request())

    assert acquisition == AlreadyExecuted(record)


def test_best_effort_does_not_swallow_a_keyboard_interrupt_at_acquire() -> None:
    manager = BestEffortReservationManager(ScriptedReservationManager(KeyboardInterrupt()))

    with pytest.raises(KeyboardInterrupt):
        manager.acquire(make_request())


def test_best_effort_keeps_the_wrapped_handles_lease_and_attempt() -> None:
    inner = RaisingHandle(RuntimeError("x"), lease_id="lease-9", attempt=3)
    manager = BestEffortReservationManager(ScriptedReservationManager(Acquired(inner)))

    acquisition = manager.acquire(make_request())

    assert isinstance(acquisition, Acquired)
    assert (acquisition.handle.lease_id, acquisition.handle.attempt) == ("lease-9", 3)


def test_a_noop_handle_release_does_nothing_and_never_raises() -> None:
    handle = NoopHandle("ex1-x")

    handle.release(Outcome.EXCEPTION, error="x")

    assert (handle.lease_id, handle.attempt) == ("", 0)


def test_an_admission_that_would_pass_the_state_document_cap_waits_for_holds_to_end() -> None:
    holds = {f"h{n}": lease(f"intent-{n}" + "x" * 100, expires_in=-60) for n in range(3000)}
    assert state_bytes(AccountState(holds)) > MAX_STATE_BYTES

    with pytest.raises(LimitWaitError) as raised:
        admitted(AccountState(holds), lease("two"), max_daily_orders=1_000_000)

    assert str(raised.value).startswith("account_state_full: ")
    assert "3000 of unknown fate" in str(raised.value)


def test_positions_that_alone_fill_the_state_document_refuse_the_intent_for_good() -> None:
    positions = {f"SYM{n:028d}": Position(BILLION) for n in range(20_000)}

    reason = refused(AccountState(positions=positions), lease("two"), max_daily_orders=10)

    assert reason.startswith("account_state_full: ")
    assert "none is closed" in reason


def test_stored_bytes_follows_firestores_size_rules() -> None:
    assert stored_bytes({"ab": "xyz", "n": 1.5, "t": T0, "b": True, "z": None}) == (
        (3 + 4) + (2 + 8) + (2 + 8) + (2 + 1) + (2 + 1)
    )


def test_an_admission_over_the_cap_removes_the_closed_positions_alone() -> None:
    closed = {f"SYM{n:028d}": Position(0) for n in range(9_000)}
    state = AccountState(positions={**closed, "OPEN": Position(-1), "LEGACY": Position(None, 0.5)})

    answer = admitted(state, lease("two", symbol="NEW"))

    assert answer.positions == {"OPEN": Position(-1), "LEGACY": Position(None, 0.5)}


def test_an_admission_under_the_cap_writes_no_positions() -> None:
    state = AccountState(positions={"FLAT": Position(0)})

    assert admitted(state, lease("two", symbol="NEW")).positions is None


def test_each_hold_counts_the_position_entry_its_order_may_add_once_per_symbol() -> None:
    flat = {"AAPL": Position(0)}
    one, two = {"a": lease("one")}, {"a": lease("one"), "b": lease("three")}

    assert state_bytes(AccountState(one)) == state_bytes(AccountState(one, flat))
    assert state_bytes(AccountState(two)) == state_bytes(AccountState(two, flat))


def test_the_position_limit_decides_a_drifted_float_on_the_side_worse_for_the_order() -> None:
    state = AccountState(positions={"AAPL": Position(None, sum([0.1] * 100))})  # 9.99999999999998

    buy = refused(state, lease("two", qty=0.000000001), max_position_qty=10)
    sell = refused(state, lease("two", side="sell", qty=20), max_position_qty=10)

    assert (buy, sell) == ("max_position_exceeded: 10.000000001 > 10",) * 2
