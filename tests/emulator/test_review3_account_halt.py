"""Third adversarial review: an account's kill switch (and its other settings) against an
invocation paused between its opening read and its acquire.

The real engine on the Firestore emulator with the real `AlpacaBroker` and the loopback Alpaca
sandbox, and the real command line. An invocation reads the account's settings document at its
start (`execution.firestore.invocation`), then pauses before its acquire: a GC, a throttled
CPU, a wait for the account's turn behind a burst (up to 60 s), lost races. Meanwhile an
operator halts the account with `kill-switch on --tenant T --account A --cancel-open`, which
waits until no call admitted before the switch can land, finds no intent of the account in
flight and no open order, and answers success. The invocation then wakes, creates its lease
and reaches the broker.

What must hold: a halt the command confirmed (exit 0) is followed by no order of the scope. The
pause is staged, not timed: the command runs inside the acquire's wrapper, and its wait
(`CliContext.sleep`) moves the engine instance's clocks by as long as it waits.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.cloud import firestore
from typer.testing import CliRunner, Result

from devtools.alpaca_sandbox import AlpacaSandbox
from execution.bootstrap import Service, bootstrap
from execution.brokers.alpaca import AlpacaBroker
from execution.cli import app
from execution.cli.context import CliContext
from execution.clock import FakeClock
from execution.errors import LimitWaitError, StoreUnavailableError
from execution.firestore.invocation import FirestoreInvocationStore
from execution.firestore.reservations import FirestoreReservationManager
from execution.firestore.support import CallPolicy
from execution.models import ExecutionResult, Outcome, TradeIntent
from execution.reservations import Acquisition, ReservationManager, ReservationRequest
from execution.settings import Settings
from tests.support.builders import (
    client_at,
    client_order_id_of,
    live,
    make_intent,
    sandbox_cli_env,
    unique,
)
from tests.support.tcp_proxy import CuttableProxy


class InstanceTime:
    """One instance's wall clock and monotonic clock, moved together."""

    def __init__(self) -> None:
        self.clock = FakeClock(datetime.now(UTC))
        self.seconds = 1000.0

    def monotonic(self) -> float:
        return self.seconds

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.seconds += seconds


class PausedBeforeAcquire:
    """The invocation's reservations, paused once between the opening read and the acquire
    (`meanwhile`), and once right after the acquire (`then`)."""

    def __init__(
        self,
        inner: ReservationManager,
        meanwhile: list[Callable[[], None]],
        then: list[Callable[[], None]],
    ) -> None:
        self._inner = inner
        self._meanwhile = meanwhile
        self._then = then

    def acquire(self, request: ReservationRequest) -> Acquisition:
        while self._meanwhile:
            self._meanwhile.pop()()
        acquisition = self._inner.acquire(request)
        while self._then:
            self._then.pop()()
        return acquisition


def service_paused_before_acquire(
    db: firestore.Client,
    time: InstanceTime,
    broker: AlpacaBroker,
    meanwhile: list[Callable[[], None]],
    settings: Settings,
    then: list[Callable[[], None]] | None = None,
) -> Service:
    """The real service on the emulator whose next acquire first runs `meanwhile` (and `then`
    once it is done)."""
    policy = CallPolicy(timeout_seconds=settings.firestore_timeout_seconds)
    store = FirestoreInvocationStore(
        db,
        reservations=FirestoreReservationManager(
            db,
            clock=time.clock,
            ttl=timedelta(seconds=settings.reservation_ttl_seconds),
            policy=policy,
        ),
        clock=time.clock,
        policy=policy,
        shared_read_max_age_seconds=settings.shared_read_max_age_seconds,
        monotonic=time.monotonic,
        wrap_reservations=lambda inner: PausedBeforeAcquire(inner, meanwhile, then or []),
    )
    return bootstrap(
        settings, clock=time.clock, db=db, store=store, broker=broker, monotonic=time.monotonic
    )


def operator_cli(
    db: firestore.Client,
    project: str,
    alpaca: AlpacaSandbox,
    broker: AlpacaBroker,
    sleep: Callable[[float], None],
) -> CliContext:
    """The operator's command line on this emulator project and the sandbox; its waits `sleep`."""
    return CliContext(
        environ={**sandbox_cli_env(alpaca.base_url), "COLUMNS": "250"},
        project_option=project,
        db_client=db,
        broker_client=broker,
        sleep=sleep,
    )


def execute_halted_meanwhile(
    db: firestore.Client,
    project: str,
    alpaca: AlpacaSandbox,
    broker: AlpacaBroker,
    scope: str,
    account: dict[str, Any] | None = None,
) -> tuple[TradeIntent, ExecutionResult, Result]:
    """Execute a fresh intent (of an account holding `account`, where given) that pauses before
    its acquire while `kill-switch on --cancel-open` halts its `scope` (the account, its tenant,
    or everything); the command's wait is the paused instance's time. The intent, its result and
    the command's."""
    time = InstanceTime()
    intent = make_intent(tenant_id=unique("tenant"), created_at=time.clock())
    if account is not None:
        write_account(db, intent, account)
    options = {
        "global": [],
        "tenant": ["--tenant", intent.tenant_id],
        "account": ["--tenant", intent.tenant_id, "--account", intent.broker_account_id],
    }[scope]
    args = ["kill-switch", "on", *options, "--reason", "drill", "--cancel-open", "--json"]
    context = operator_cli(db, project, alpaca, broker, time.advance)
    halted: list[Result] = []
    meanwhile = [lambda: halted.append(CliRunner().invoke(app, args, obj=context))]
    service = service_paused_before_acquire(db, time, broker, meanwhile, live())
    try:
        result = service.engine.execute_intent(intent)
    finally:
        db.collection("ops").document("execution_kill_switch").delete()
    return intent, result, halted[0]


def write_account(db: firestore.Client, intent: TradeIntent, fields: dict[str, Any]) -> None:
    db.collection("tenants", intent.tenant_id, "accounts").document(intent.broker_account_id).set(
        fields
    )


def service_changing_the_account_meanwhile(
    db: firestore.Client,
    broker: AlpacaBroker,
    intent: TradeIntent,
    *,
    before: dict[str, Any],
    after: dict[str, Any],
) -> Service:
    """The service, with `intent`'s account holding `before`; its first acquire pauses while
    the account is rewritten to `after`, past SHARED_READ_MAX_AGE_SECONDS (1 s)."""
    time = InstanceTime()
    write_account(db, intent, before)

    def change_and_wait() -> None:
        write_account(db, intent, after)
        time.advance(2.0)

    return service_paused_before_acquire(db, time, broker, [change_and_wait], live())


@pytest.mark.parametrize(
    "account",
    [
        pytest.param({"trading_mode": "LIVE"}, id="account-without-counting-limits"),
        pytest.param({"max_inflight_usd": 1_000_000.0}, id="account-with-a-budget"),
    ],
)
def test_an_account_halt_the_command_confirmed_is_followed_by_no_order_of_the_account(
    db: firestore.Client,
    firestore_project: str,
    alpaca: AlpacaSandbox,
    alpaca_broker: AlpacaBroker,
    account: dict[str, Any],
) -> None:
    intent, result, command = execute_halted_meanwhile(
        db, firestore_project, alpaca, alpaca_broker, "account", account
    )

    assert command.exit_code == 0, command.output  # the halt was confirmed: nothing in flight
    assert json.loads(command.stdout)["cancel_open"]["in_flight"] == []
    assert client_order_id_of(intent) not in alpaca.orders
    assert result.outcome is Outcome.HALTED
    assert result.reason == "account_mode_off"


@pytest.mark.parametrize("scope", ["global", "tenant"])
def test_a_global_or_tenant_halt_the_command_confirmed_is_followed_by_no_order_either(
    db: firestore.Client,
    firestore_project: str,
    alpaca: AlpacaSandbox,
    alpaca_broker: AlpacaBroker,
    scope: str,
) -> None:
    """What held: the switches' own documents are read again where their read is older than
    SHARED_READ_MAX_AGE_SECONDS when the authority decides."""
    intent, result, command = execute_halted_meanwhile(
        db, firestore_project, alpaca, alpaca_broker, scope
    )

    assert command.exit_code == 0, command.output
    assert client_order_id_of(intent) not in alpaca.orders
    assert result.outcome is Outcome.HALTED
    assert result.reason == f"kill_switch_{scope}"


def test_a_symbol_denied_while_an_intent_waits_for_its_acquire_stops_it_once_the_read_is_old(
    db: firestore.Client, alpaca: AlpacaSandbox, alpaca_broker: AlpacaBroker
) -> None:
    """The same class for the account's other settings: a limit written before an invocation
    decides (by more than SHARED_READ_MAX_AGE_SECONDS) binds it, as a kill switch does."""
    intent = make_intent(tenant_id=unique("tenant"))
    service = service_changing_the_account_meanwhile(
        db,
        alpaca_broker,
        intent,
        before={"max_order_notional_usd": 1_000_000.0},
        after={"denied_symbols": [intent.symbol]},
    )

    result = service.engine.execute_intent(intent)

    assert client_order_id_of(intent) not in alpaca.orders
    assert result.outcome is Outcome.REJECTED
    assert result.reason == f"symbol_denied: {intent.symbol}"


def test_a_budget_lowered_while_an_intent_waits_for_its_acquire_binds_it(
    db: firestore.Client, alpaca: AlpacaSandbox, alpaca_broker: AlpacaBroker
) -> None:
    """The acquire admits on the account as the invocation read it at its start: where the
    counting limits changed since (by more than SHARED_READ_MAX_AGE_SECONDS before the gates),
    the lease admitted under the old ones never reaches the broker; the redelivery is decided
    on the limit as it is now."""
    intent = make_intent(tenant_id=unique("tenant"))  # worth $100
    service = service_changing_the_account_meanwhile(
        db,
        alpaca_broker,
        intent,
        before={"max_inflight_usd": 1000.0},
        after={"max_inflight_usd": 50.0},
    )

    with pytest.raises(LimitWaitError) as waited:
        service.engine.execute_intent(intent)
    redelivered = service.engine.execute_intent(intent)

    assert "account_limits_changed" in str(waited.value)
    assert client_order_id_of(intent) not in alpaca.orders
    assert redelivered.outcome is Outcome.REJECTED
    assert redelivered.reason is not None
    assert redelivered.reason.startswith("max_inflight_usd_exceeded")
    state = db.collection("tenants", intent.tenant_id, "execution_inflight").document(
        intent.broker_account_id
    )
    assert (state.get().to_dict() or {}).get("leases") == {}


def test_an_account_read_again_that_the_store_cannot_answer_is_never_guessed_open(
    db: firestore.Client, alpaca: AlpacaSandbox, alpaca_broker: AlpacaBroker
) -> None:
    """Reading the account again adds a store call that can fail after the lease is held. With
    `RISK_FAIL_OPEN=1` risk lets an unreadable account through, but its `trading_mode` is a kill
    switch, and an unreadable kill switch is never guessed "off": the delivery is retried. (Here
    the switches' own read, as old, fails too; the engine refuses the authority an account the
    store did not answer in any case, for a store that answers the one and not the other.)"""
    proxy = CuttableProxy(os.environ["FIRESTORE_EMULATOR_HOST"])
    time = InstanceTime()
    intent = make_intent(tenant_id=unique("tenant"))
    write_account(db, intent, {"trading_mode": "LIVE"})

    def halt_and_wait() -> None:
        write_account(db, intent, {"trading_mode": "OFF"})
        time.advance(2.0)

    try:
        with client_at(proxy.address, db.project) as proxied:
            service = service_paused_before_acquire(
                proxied,
                time,
                alpaca_broker,
                [halt_and_wait],
                live(risk_fail_open=True),
                [proxy.cut],
            )
            with pytest.raises(StoreUnavailableError):
                service.engine.execute_intent(intent)
    finally:
        proxy.close()

    assert client_order_id_of(intent) not in alpaca.orders
