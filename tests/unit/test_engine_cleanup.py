"""The engine's cleanup guarantee: a lease acquired is released exactly once, on every path.

First the four paths the service was built to contain — a broker exception, an agent-mode
refusal, a risk rejection and a dry run each release the lease once, with their outcome — then a
fault forced at every stage, then the reservation boundaries (acquire, release), stale intents,
duplicates and retryable waits.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest

from execution.account_state import AccountState, Lease
from execution.accounts import AccountSettings
from execution.bootstrap import bootstrap
from execution.client_order_ids import client_order_id_for
from execution.clock import FakeClock
from execution.errors import (
    AgentModeError,
    BrokerRejectedError,
    BrokerTransientError,
    BudgetWaitError,
    ExecutionHaltedError,
    OutcomeUnrecordedError,
    PayloadConflictError,
    PriceUnavailableError,
    ReservationContentionError,
    ReservationInFlightError,
    RetryableError,
    StoreUnavailableError,
)
from execution.models import OrderRequest, Outcome
from execution.reservations import (
    Acquired,
    BestEffortReservationManager,
    ReservationStatus,
)
from execution.risk import RiskDecision
from execution.routing import RouteDecision
from execution.settings import AgentMode, Settings
from tests.unit.fakes import (
    MAX_AGE_SECONDS,
    T0,
    FakeAccounts,
    FakeAuthority,
    FakeKillSwitches,
    FakeQuotes,
    FakeRisk,
    FakeRouter,
    InMemoryReservationManager,
    RaisingHandle,
    RecordingBroker,
    RecordingLedger,
    Rig,
    ScriptedReservationManager,
    SeparatePorts,
    client_order_id_of,
    logged,
    make_engine,
    make_intent,
    make_quote,
    make_record,
    market_intent,
)


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, Any]]:
    """The structured fields of every captured record with event `name`."""
    return logged(caplog.records, name)


def failing_broker(exc: BaseException) -> RecordingBroker:
    broker = RecordingBroker()
    broker.fail_with(exc)
    return broker


# --- broker exception, agent-mode refusal, risk rejection, dry run: each released once ------


def test_a_broker_exception_releases_the_lease_once_with_outcome_exception() -> None:
    rig = make_engine(broker=failing_broker(RuntimeError("socket closed")))

    with pytest.raises(RuntimeError):
        rig.engine.execute_intent(make_intent())

    assert rig.manager.releases == [
        ("lease-1", Outcome.EXCEPTION, "RuntimeError: socket closed", None)
    ]


def test_a_broker_exception_is_reraised_unchanged() -> None:
    boom = RuntimeError("socket closed")
    rig = make_engine(broker=failing_broker(boom))

    with pytest.raises(RuntimeError) as raised:
        rig.engine.execute_intent(make_intent())

    assert raised.value is boom


def test_an_agent_mode_error_releases_the_lease_once_with_outcome_halted() -> None:
    rig = make_engine(authority=FakeAuthority(AgentModeError("agent_mode_off")))

    result = rig.engine.execute_intent(make_intent())

    assert result.outcome is Outcome.HALTED
    assert result.reason == "agent_mode_off"
    assert rig.manager.releases == [("lease-1", Outcome.HALTED, "agent_mode_off", None)]
    assert rig.broker.calls == []


def test_a_kill_switch_releases_the_lease_once_with_outcome_halted() -> None:
    rig = make_engine(authority=FakeAuthority(ExecutionHaltedError("kill_switch_global")))

    result = rig.engine.execute_intent(make_intent())

    assert result.outcome is Outcome.HALTED
    assert rig.manager.releases == [("lease-1", Outcome.HALTED, "kill_switch_global", None)]
    assert rig.broker.calls == []


def test_a_halted_intent_is_a_duplicate_on_redelivery_not_retried() -> None:
    rig = make_engine(authority=FakeAuthority(AgentModeError("agent_mode_off")))
    rig.engine.execute_intent(make_intent())
    rig.authority.error = None

    again = rig.engine.execute_intent(make_intent())

    assert again.outcome is Outcome.DUPLICATE
    assert again.recorded_outcome is Outcome.HALTED
    assert rig.broker.calls == []


def test_a_risk_rejection_releases_the_lease_once_with_outcome_rejected() -> None:
    rig = make_engine(risk=FakeRisk(RiskDecision(False, "max_order_notional_exceeded")))

    result = rig.engine.execute_intent(make_intent())

    assert result.outcome is Outcome.REJECTED
    assert result.reason == "max_order_notional_exceeded"
    assert rig.manager.releases == [
        ("lease-1", Outcome.REJECTED, "max_order_notional_exceeded", None)
    ]
    assert rig.broker.calls == []


def test_a_dry_run_intent_releases_once_with_outcome_dry_run_and_never_calls_the_broker() -> None:
    rig = make_engine()

    result = rig.engine.execute_intent(make_intent(dry_run=True))

    assert result.outcome is Outcome.DRY_RUN
    assert result.reason == "intent"
    assert rig.manager.releases == [("lease-1", Outcome.DRY_RUN, "intent", None)]
    assert rig.broker.calls == []


def test_the_dry_run_setting_releases_once_with_outcome_dry_run_and_no_broker_call() -> None:
    rig = make_engine(dry_run=True)

    result = rig.engine.execute_intent(make_intent())

    assert result.outcome is Outcome.DRY_RUN
    assert result.reason == "EXECUTION_DRY_RUN"
    assert rig.manager.releases == [("lease-1", Outcome.DRY_RUN, "EXECUTION_DRY_RUN", None)]
    assert rig.broker.calls == []


def test_a_dry_run_still_passes_through_the_authority_gate() -> None:
    rig = make_engine(dry_run=True, authority=FakeAuthority(AgentModeError("agent_mode_observe")))

    result = rig.engine.execute_intent(make_intent())

    assert result.outcome is Outcome.HALTED


# --- the happy path, for reference ---------------------------------------------------------


def test_a_placed_order_releases_once_with_its_broker_order_id() -> None:
    rig = make_engine()

    result = rig.engine.execute_intent(make_intent())

    assert result.outcome is Outcome.PLACED
    assert result.broker_order_id == "order-1"
    assert rig.manager.releases == [("lease-1", Outcome.PLACED, None, "order-1")]


def test_a_placed_order_carries_the_tenant_safe_client_order_id() -> None:
    rig = make_engine()
    intent = make_intent(client_intent_id="intent-42")

    rig.engine.execute_intent(intent)

    expected = client_order_id_for(intent.tenant_id, intent.broker_account_id, "intent-42")
    assert [call.client_order_id for call in rig.broker.calls] == [expected]


def test_a_placed_order_is_written_to_the_ledger() -> None:
    rig = make_engine()

    rig.engine.execute_intent(make_intent())

    assert [order.broker_order_id for _, order in rig.ledger.trades] == ["order-1"]


def test_a_placed_intent_delivered_again_is_a_duplicate_without_a_second_order() -> None:
    rig = make_engine()
    rig.engine.execute_intent(make_intent())

    again = rig.engine.execute_intent(make_intent())

    assert again.outcome is Outcome.DUPLICATE
    assert len(rig.broker.calls) == 1


def test_the_reservation_is_stored_released_with_the_outcome() -> None:
    rig = make_engine()

    rig.engine.execute_intent(make_intent())

    record = rig.manager.record_for(make_intent())
    assert (record.status, record.outcome, record.broker_order_id) == (
        ReservationStatus.RELEASED,
        Outcome.PLACED,
        "order-1",
    )


# --- a fault forced at every stage ---------------------------------------------------------


def test_an_unreadable_quote_for_a_priced_intent_still_places_once_released() -> None:
    rig = make_engine(quotes=FakeQuotes(error=StoreUnavailableError("quotes down")))

    result = rig.engine.execute_intent(make_intent())

    assert result.outcome is Outcome.PLACED
    assert [call[1] for call in rig.manager.releases] == [Outcome.PLACED]


def test_an_unreadable_quote_is_routed_as_no_quote_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    rig = make_engine(quotes=FakeQuotes(error=StoreUnavailableError("quotes down")))

    rig.engine.execute_intent(make_intent())

    assert rig.router.seen == [None]
    assert len(events(caplog, "exec.route.quote_unavailable")) == 1


def test_a_raising_router_is_advisory_and_the_order_is_placed_once_released(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    rig = make_engine(router=FakeRouter(error=ValueError("bad quote json")))

    result = rig.engine.execute_intent(make_intent())

    assert result.outcome is Outcome.PLACED
    assert [call[1] for call in rig.manager.releases] == [Outcome.PLACED]
    assert len(events(caplog, "exec.route.failed")) == 1


def test_a_router_denial_releases_once_with_outcome_rejected() -> None:
    rig = make_engine(router=FakeRouter(RouteDecision(False, "spread_too_wide: 80.0 bps > 50")))

    result = rig.engine.execute_intent(make_intent())

    assert result.outcome is Outcome.REJECTED
    assert rig.manager.releases == [
        ("lease-1", Outcome.REJECTED, "spread_too_wide: 80.0 bps > 50", None)
    ]
    assert rig.broker.calls == []


def test_a_raising_risk_gate_releases_once_with_outcome_exception() -> None:
    rig = make_engine(risk=FakeRisk(error=ConnectionError("postgres gone")))

    with pytest.raises(ConnectionError):
        rig.engine.execute_intent(make_intent())

    assert rig.manager.releases == [
        ("lease-1", Outcome.EXCEPTION, "ConnectionError: postgres gone", None)
    ]
    assert rig.broker.calls == []


def test_an_unexpected_authority_error_releases_once_with_outcome_exception() -> None:
    rig = make_engine(authority=FakeAuthority(StoreUnavailableError("switches unreadable")))

    with pytest.raises(StoreUnavailableError):
        rig.engine.execute_intent(make_intent())

    assert rig.manager.releases == [
        ("lease-1", Outcome.EXCEPTION, "StoreUnavailableError: switches unreadable", None)
    ]
    assert rig.broker.calls == []


def test_a_transient_broker_error_releases_once_with_outcome_exception_and_is_retryable() -> None:
    rig = make_engine(broker=failing_broker(BrokerTransientError("HTTP 503")))

    with pytest.raises(RetryableError):
        rig.engine.execute_intent(make_intent())

    assert rig.manager.releases == [
        ("lease-1", Outcome.EXCEPTION, "BrokerTransientError: HTTP 503", None)
    ]


def test_after_a_transient_broker_error_the_next_delivery_executes_as_attempt_two() -> None:
    rig = make_engine(broker=failing_broker(BrokerTransientError("timeout")))
    with pytest.raises(BrokerTransientError):
        rig.engine.execute_intent(make_intent())

    result = rig.engine.execute_intent(make_intent())

    assert (result.outcome, result.attempt) == (Outcome.PLACED, 2)
    assert len(rig.broker.orders) == 1


def test_a_broker_rejection_releases_once_with_outcome_rejected_and_returns() -> None:
    rig = make_engine(broker=failing_broker(BrokerRejectedError("insufficient buying power")))

    result = rig.engine.execute_intent(make_intent())

    assert result.outcome is Outcome.REJECTED
    assert result.reason == "broker_rejected: insufficient buying power"
    assert rig.manager.releases == [
        ("lease-1", Outcome.REJECTED, "broker_rejected: insufficient buying power", None)
    ]


def test_a_raising_ledger_leaves_the_order_placed_and_released_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    rig = make_engine(ledger=RecordingLedger(StoreUnavailableError("ledger down")))

    result = rig.engine.execute_intent(make_intent())

    assert result.outcome is Outcome.PLACED
    assert rig.manager.releases == [("lease-1", Outcome.PLACED, None, "order-1")]
    assert [f["broker_order_id"] for f in events(caplog, "exec.ledger_write_failed")] == ["order-1"]


def test_a_base_exception_such_as_system_exit_still_releases_the_lease() -> None:
    rig = make_engine(broker=failing_broker(SystemExit(1)))

    with pytest.raises(SystemExit):
        rig.engine.execute_intent(make_intent())

    assert [call[1] for call in rig.manager.releases] == [Outcome.EXCEPTION]


def test_an_exception_is_logged_with_its_attempt(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    rig = make_engine(broker=failing_broker(RuntimeError("boom")))

    with pytest.raises(RuntimeError):
        rig.engine.execute_intent(make_intent())

    assert [(f["attempt"], f["error"]) for f in events(caplog, "exec.intent.exception")] == [
        (1, "RuntimeError: boom")
    ]


# --- reservation boundaries ----------------------------------------------------------------


def test_a_store_outage_at_acquire_propagates_as_retryable() -> None:
    outage = StoreUnavailableError("firestore unreachable")
    rig = make_engine()
    rig.manager.fail_acquire_with = outage

    with pytest.raises(RetryableError) as raised:
        rig.engine.execute_intent(make_intent())

    assert raised.value is outage


def test_a_store_outage_at_acquire_never_calls_the_broker() -> None:
    rig = make_engine()
    rig.manager.fail_acquire_with = StoreUnavailableError("firestore unreachable")

    with pytest.raises(StoreUnavailableError):
        rig.engine.execute_intent(make_intent())

    assert rig.broker.calls == []
    assert rig.manager.releases == []


def test_lost_contention_at_acquire_propagates_as_retryable_without_a_broker_call() -> None:
    rig = make_engine()
    rig.manager.fail_acquire_with = ReservationContentionError("6 attempts lost")

    with pytest.raises(RetryableError):
        rig.engine.execute_intent(make_intent())

    assert rig.broker.calls == []


def test_a_payload_conflict_propagates_without_a_broker_call_or_release() -> None:
    rig = make_engine()
    rig.manager.seed(make_record(payload_hash="another-payload"))

    with pytest.raises(PayloadConflictError):
        rig.engine.execute_intent(make_intent())

    assert rig.broker.calls == []
    assert rig.manager.releases == []


def best_effort_rig(
    *,
    acquire_error: Exception | None = None,
    release_error: Exception | None = None,
    **overrides: Any,
) -> tuple[Rig, InMemoryReservationManager]:
    """An engine on `BestEffortReservationManager` around a faulty in-memory manager."""
    clock = FakeClock(T0)
    inner = InMemoryReservationManager(
        clock, fail_acquire_with=acquire_error, fail_release_with=release_error
    )
    rig = make_engine(clock=clock, reservations=BestEffortReservationManager(inner), **overrides)
    return rig, inner


def test_best_effort_reservations_place_the_order_when_the_store_is_down_at_acquire(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    rig, _ = best_effort_rig(acquire_error=StoreUnavailableError("firestore unreachable"))

    result = rig.engine.execute_intent(make_intent())

    assert result.outcome is Outcome.PLACED
    assert len(events(caplog, "exec.reservation.fail_open")) == 1


def test_best_effort_reservations_turn_an_unrecorded_placed_order_into_a_redelivery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    rig, inner = best_effort_rig(release_error=StoreUnavailableError("release write timed out"))

    with pytest.raises(OutcomeUnrecordedError) as raised:
        rig.engine.execute_intent(make_intent())

    assert isinstance(raised.value, RetryableError)
    assert [call[1] for call in inner.releases] == [Outcome.PLACED]
    assert len(events(caplog, "exec.reservation.release_failed")) == 1


def test_best_effort_passes_a_raising_release_to_the_engine_which_logs_its_lease(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    inner = RaisingHandle(StoreUnavailableError("release timed out"))
    manager = BestEffortReservationManager(ScriptedReservationManager(Acquired(inner)))
    rig = make_engine(reservations=manager)

    with pytest.raises(OutcomeUnrecordedError):
        rig.engine.execute_intent(make_intent())

    assert inner.calls == [Outcome.PLACED]
    failures = events(caplog, "exec.reservation.release_failed")
    assert [f["lease_id"] for f in failures] == ["lease-x"]


def test_best_effort_reservations_never_let_a_raising_release_mask_the_original_error() -> None:
    rig, inner = best_effort_rig(
        release_error=StoreUnavailableError("release write timed out"),
        broker=failing_broker(BrokerTransientError("HTTP 502")),
    )

    with pytest.raises(BrokerTransientError):
        rig.engine.execute_intent(make_intent())

    assert [call[1] for call in inner.releases] == [Outcome.EXCEPTION]


def test_a_lease_whose_release_failed_is_taken_over_once_it_expires() -> None:
    rig, inner = best_effort_rig(
        release_error=StoreUnavailableError("release write timed out"),
        broker=failing_broker(BrokerTransientError("HTTP 502")),
    )
    with pytest.raises(BrokerTransientError):
        rig.engine.execute_intent(make_intent())
    inner.fail_release_with = None
    rig.clock.advance(inner.ttl.total_seconds())

    result = rig.engine.execute_intent(make_intent())

    assert (result.outcome, result.attempt) == (Outcome.PLACED, 2)


def test_the_strict_engine_contains_a_raising_release_and_asks_for_a_redelivery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    handle = RaisingHandle(StoreUnavailableError("release write timed out"))
    rig = make_engine(reservations=ScriptedReservationManager(Acquired(handle)))

    with pytest.raises(OutcomeUnrecordedError):
        rig.engine.execute_intent(make_intent())

    assert handle.calls == [Outcome.PLACED]
    assert len(events(caplog, "exec.reservation.release_failed")) == 1


def test_a_raising_release_never_masks_the_original_error() -> None:
    handle = RaisingHandle(StoreUnavailableError("release write timed out"))
    rig = make_engine(
        reservations=ScriptedReservationManager(Acquired(handle)),
        broker=failing_broker(BrokerTransientError("HTTP 502")),
    )

    with pytest.raises(BrokerTransientError):
        rig.engine.execute_intent(make_intent())

    assert handle.calls == [Outcome.EXCEPTION]


def test_a_placed_order_whose_release_failed_is_recorded_by_its_redelivery_no_new_order() -> None:
    rig = make_engine()
    rig.manager.fail_release_with = StoreUnavailableError("release write timed out")
    with pytest.raises(OutcomeUnrecordedError):
        rig.engine.execute_intent(make_intent())
    rig.manager.fail_release_with = None
    rig.clock.advance(rig.manager.ttl.total_seconds())

    result = rig.engine.execute_intent(make_intent())

    assert (result.outcome, result.attempt, result.broker_order_id) == (
        Outcome.PLACED,
        2,
        "order-1",
    )
    assert len(rig.broker.orders) == 1
    assert len(rig.broker.calls) == 1


def test_a_later_attempt_records_an_order_the_broker_already_has_whatever_the_gates_say() -> None:
    rig = make_engine(authority=FakeAuthority(ExecutionHaltedError("kill_switch_global")))
    intent = make_intent()
    placed_before = rig.broker.place_order(
        OrderRequest.from_intent(intent, 100.0, client_order_id_of(intent))
    )
    rig.manager.seed(make_record(expires_at=T0 - timedelta(seconds=1)))  # a lapsed first attempt

    result = rig.engine.execute_intent(make_intent())

    assert (result.outcome, result.attempt) == (Outcome.PLACED, 2)
    assert result.broker_order_id == placed_before.broker_order_id
    assert len(rig.broker.orders) == 1


# --- stale intents -------------------------------------------------------------------------


def test_an_intent_created_longer_ago_than_the_max_age_is_stale() -> None:
    rig = make_engine()
    old = T0 - timedelta(seconds=MAX_AGE_SECONDS + 1)

    result = rig.engine.execute_intent(make_intent(created_at=old))

    assert result.outcome is Outcome.STALE
    assert result.reason is not None and result.reason.startswith("intent_stale:")


def test_a_stale_intent_never_reaches_the_broker_and_releases_once() -> None:
    rig = make_engine()
    old = T0 - timedelta(seconds=MAX_AGE_SECONDS + 1)

    rig.engine.execute_intent(make_intent(created_at=old))

    assert rig.broker.calls == []
    assert [call[1] for call in rig.manager.releases] == [Outcome.STALE]


def test_a_stale_intent_is_reserved_without_budget_enforcement() -> None:
    rig = make_engine()
    old = T0 - timedelta(seconds=MAX_AGE_SECONDS + 1)

    rig.engine.execute_intent(make_intent(created_at=old))

    assert [request.enforce_budget for request in rig.manager.requests] == [False]


def test_a_stale_intent_is_recorded_even_when_the_account_budget_is_full() -> None:
    rig = make_engine()
    rig.manager.budgets[("tenant-a", "acct-1")] = 10.0
    old = T0 - timedelta(seconds=MAX_AGE_SECONDS + 1)

    result = rig.engine.execute_intent(make_intent(created_at=old))

    assert result.outcome is Outcome.STALE


def test_a_stale_market_intent_reads_no_quote() -> None:
    rig = make_engine()
    old = T0 - timedelta(seconds=MAX_AGE_SECONDS + 1)

    result = rig.engine.execute_intent(market_intent(created_at=old))

    assert result.outcome is Outcome.STALE
    assert rig.quotes.reads == []


def test_an_intent_exactly_at_the_max_age_is_still_fresh() -> None:
    rig = make_engine()

    result = rig.engine.execute_intent(
        make_intent(created_at=T0 - timedelta(seconds=MAX_AGE_SECONDS))
    )

    assert result.outcome is Outcome.PLACED


def test_without_created_at_freshness_is_measured_from_the_publish_time() -> None:
    rig = make_engine()
    published = T0 - timedelta(seconds=MAX_AGE_SECONDS + 1)

    result = rig.engine.execute_intent(make_intent(), published_at=published)

    assert result.outcome is Outcome.STALE


def test_a_created_at_later_than_the_publish_time_cannot_make_an_old_message_fresh() -> None:
    rig = make_engine()
    published = T0 - timedelta(seconds=MAX_AGE_SECONDS + 1)

    result = rig.engine.execute_intent(make_intent(created_at=T0), published_at=published)

    assert result.outcome is Outcome.STALE


def test_a_created_at_earlier_than_the_publish_time_is_what_ages_the_intent() -> None:
    rig = make_engine()
    created = T0 - timedelta(seconds=MAX_AGE_SECONDS + 1)

    result = rig.engine.execute_intent(make_intent(created_at=created), published_at=T0)

    assert result.outcome is Outcome.STALE


def test_an_intent_with_no_time_at_all_is_never_stale() -> None:
    rig = make_engine()

    result = rig.engine.execute_intent(make_intent())

    assert result.outcome is Outcome.PLACED


# --- duplicates and retryable waits --------------------------------------------------------


def test_an_already_executed_intent_returns_duplicate_with_the_recorded_result() -> None:
    rig = make_engine()
    rig.manager.seed(
        make_record(
            status=ReservationStatus.RELEASED,
            outcome=Outcome.PLACED,
            broker_order_id="order-77",
            attempt=2,
        )
    )

    result = rig.engine.execute_intent(make_intent())

    assert result.outcome is Outcome.DUPLICATE
    assert (result.recorded_outcome, result.broker_order_id, result.attempt) == (
        Outcome.PLACED,
        "order-77",
        2,
    )


def test_a_duplicate_never_calls_the_broker_nor_releases() -> None:
    rig = make_engine()
    rig.manager.seed(make_record(status=ReservationStatus.RELEASED, outcome=Outcome.PLACED))

    rig.engine.execute_intent(make_intent())

    assert rig.broker.calls == []
    assert rig.manager.releases == []


def test_a_duplicate_is_logged_with_the_recorded_outcome(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    rig = make_engine()
    rig.manager.seed(make_record(status=ReservationStatus.RELEASED, outcome=Outcome.REJECTED))

    rig.engine.execute_intent(make_intent())

    assert [f["recorded_outcome"] for f in events(caplog, "exec.intent.duplicate")] == ["rejected"]


def test_an_intent_held_by_a_live_lease_raises_in_flight_which_is_retryable() -> None:
    rig = make_engine()
    rig.manager.seed(make_record())

    with pytest.raises(ReservationInFlightError) as raised:
        rig.engine.execute_intent(make_intent())

    assert isinstance(raised.value, RetryableError)
    assert rig.broker.calls == []
    assert rig.manager.releases == []


def test_an_intent_whose_lease_lapsed_is_taken_over_as_the_next_attempt() -> None:
    rig = make_engine()
    rig.manager.seed(make_record(expires_at=T0 - timedelta(seconds=1)))

    result = rig.engine.execute_intent(make_intent())

    assert (result.outcome, result.attempt) == (Outcome.PLACED, 2)


def held_elsewhere(amount_usd: float, *, for_seconds: float = 60) -> AccountState:
    """An account's state document holding one other intent's lease."""
    lease = Lease("held-elsewhere", amount_usd, T0 + timedelta(seconds=for_seconds))
    return AccountState({"lease-held": lease})


def test_a_full_account_budget_raises_budget_wait_which_is_retryable() -> None:
    rig = make_engine()
    rig.manager.budgets[("tenant-a", "acct-1")] = 1500.0
    rig.manager.inflight[("tenant-a", "acct-1")] = held_elsewhere(1000.0)

    with pytest.raises(BudgetWaitError) as raised:
        rig.engine.execute_intent(make_intent())

    assert isinstance(raised.value, RetryableError)
    assert rig.broker.calls == []
    assert rig.manager.releases == []


def test_the_budget_frees_up_when_the_holding_lease_expires() -> None:
    rig = make_engine()
    rig.manager.budgets[("tenant-a", "acct-1")] = 1500.0
    rig.manager.inflight[("tenant-a", "acct-1")] = held_elsewhere(1000.0, for_seconds=60)
    rig.clock.advance(61)

    result = rig.engine.execute_intent(make_intent())

    assert result.outcome is Outcome.PLACED


def test_a_released_lease_gives_its_budget_back_to_the_next_intent() -> None:
    rig = make_engine()
    rig.manager.budgets[("tenant-a", "acct-1")] = 1000.0
    rig.engine.execute_intent(make_intent(client_intent_id="first"))

    result = rig.engine.execute_intent(make_intent(client_intent_id="second"))

    assert result.outcome is Outcome.PLACED


def test_a_failed_trade_gives_its_budget_back_to_the_next_intent() -> None:
    rig = make_engine(broker=failing_broker(RuntimeError("boom")))
    rig.manager.budgets[("tenant-a", "acct-1")] = 1000.0
    with pytest.raises(RuntimeError):
        rig.engine.execute_intent(make_intent(client_intent_id="first"))

    result = rig.engine.execute_intent(make_intent(client_intent_id="second"))

    assert result.outcome is Outcome.PLACED


# --- market orders priced from the quote ---------------------------------------------------


def test_a_market_order_without_notional_is_reserved_at_qty_times_the_quote() -> None:
    rig = make_engine(quotes=FakeQuotes({"AAPL": make_quote(bid=99.0, ask=101.0)}))

    rig.engine.execute_intent(market_intent())

    assert [request.amount_usd for request in rig.manager.requests] == [1010.0]


def test_a_market_sell_is_priced_at_the_bid() -> None:
    rig = make_engine(quotes=FakeQuotes({"AAPL": make_quote(bid=99.0, ask=101.0)}))

    rig.engine.execute_intent(market_intent(side="sell"))

    assert [request.amount_usd for request in rig.manager.requests] == [990.0]


def test_a_market_order_reads_its_quote_once_and_sends_it_as_the_reference_price() -> None:
    rig = make_engine(quotes=FakeQuotes({"AAPL": make_quote(bid=99.0, ask=101.0)}))

    rig.engine.execute_intent(market_intent())

    assert rig.quotes.reads == ["AAPL"]
    assert [call.reference_price for call in rig.broker.calls] == [101.0]


def test_a_market_order_with_notional_is_reserved_at_the_notional() -> None:
    rig = make_engine()

    rig.engine.execute_intent(market_intent(notional_usd=2500.0))

    assert [request.amount_usd for request in rig.manager.requests] == [2500.0]


def test_a_market_order_without_notional_or_quote_waits_for_a_quote_before_acquire() -> None:
    rig = make_engine(quotes=FakeQuotes({}))

    with pytest.raises(PriceUnavailableError) as raised:
        rig.engine.execute_intent(market_intent())

    assert isinstance(raised.value, RetryableError)
    assert "market_quotes/AAPL" in str(raised.value)
    assert rig.manager.requests == []
    assert rig.broker.calls == []


def test_a_stale_market_order_without_a_quote_is_recorded_stale_without_budget() -> None:
    rig = make_engine(quotes=FakeQuotes({}))
    intent = market_intent(created_at=rig.clock() - timedelta(hours=1))

    result = rig.engine.execute_intent(intent)

    assert result.outcome is Outcome.STALE
    assert [(r.amount_usd, r.enforce_budget) for r in rig.manager.requests] == [(0.0, False)]
    assert rig.quotes.reads == []


def test_a_quote_store_outage_with_unknown_notional_raises_before_acquire() -> None:
    rig = make_engine(quotes=FakeQuotes(error=StoreUnavailableError("quotes down")))

    with pytest.raises(StoreUnavailableError):
        rig.engine.execute_intent(market_intent())

    assert rig.manager.requests == []
    assert rig.broker.calls == []


def test_a_fresh_intent_is_reserved_with_budget_enforcement_and_its_payload_hash() -> None:
    rig = make_engine()
    intent = make_intent()

    rig.engine.execute_intent(intent)

    assert [(r.enforce_budget, r.payload_hash, r.amount_usd) for r in rig.manager.requests] == [
        (True, intent.payload_hash(), 1000.0)
    ]


def test_the_authority_is_told_whether_the_broker_is_paper() -> None:
    rig = make_engine(broker=RecordingBroker(is_paper=False))

    rig.engine.execute_intent(make_intent())

    assert rig.authority.checks == [False]


# --- the account, read once ----------------------------------------------------------------


def test_the_account_is_read_once_and_shared_by_risk_and_authority() -> None:
    settings = AccountSettings(trading_mode=AgentMode.PAPER)
    accounts = FakeAccounts({("tenant-a", "acct-1"): settings})
    rig = make_engine(accounts=accounts)

    rig.engine.execute_intent(make_intent(tenant_id="tenant-a", broker_account_id="acct-1"))

    assert [read.settings for read in rig.risk.accounts] == [settings]
    assert rig.authority.account_modes == [AgentMode.PAPER]


def test_an_unreadable_account_reaches_risk_as_an_error_not_an_exception() -> None:
    outage = StoreUnavailableError("accounts down")
    rig = make_engine(accounts=FakeAccounts(error=outage))

    # Risk (here a fake that passes, as fail-open does) decides on the limits; the authority
    # then refuses an account it cannot read (its `trading_mode` is a kill switch): retry.
    with pytest.raises(StoreUnavailableError) as raised:
        rig.engine.execute_intent(make_intent())

    [read] = rig.risk.accounts
    assert read.settings is None
    assert read.error is not None and "accounts down" in read.error
    assert read.outage is outage
    assert raised.value is outage
    assert rig.broker.calls == []


def test_a_malformed_account_reaches_risk_as_an_error_without_an_outage() -> None:
    rig = make_engine(accounts=FakeAccounts(error=ValueError("max_order_notional_usd: 'a lot'")))

    rig.engine.execute_intent(make_intent())

    [read] = rig.risk.accounts
    assert read.error is not None and read.outage is None


def test_bootstrap_refuses_fail_open_with_a_store_it_did_not_build() -> None:
    rig = make_engine()
    store = SeparatePorts(
        reservations=rig.reservations,
        quotes=rig.quotes,
        accounts=FakeAccounts(),
        switches=FakeKillSwitches(),
        ledger=rig.ledger,
    )

    with pytest.raises(ValueError, match="wraps its own"):
        bootstrap(Settings(), store=store, fail_open_reservations=True)
