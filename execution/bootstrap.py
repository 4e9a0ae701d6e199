"""The composition root: builds the service from settings, real adapters only where none is given.

`main.py` calls `bootstrap` lazily, once per instance, so warm invocations reuse the clients and
`import main` stays free of network, credentials and heavy start-up work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from execution.authority import Authority, TradingAuthority
from execution.broker_truth import BrokerTruth, ReservationRecords
from execution.brokers.base import Broker
from execution.clock import Clock, system_clock
from execution.dead_letters import DeadLetters
from execution.engine import ExecutionEngine
from execution.errors import SettingsError
from execution.freshness import MAX_CLOCK_SKEW_SECONDS
from execution.invocation import InvocationStore
from execution.reconciler import Reconciler
from execution.reservations import BestEffortReservationManager
from execution.risk import RiskGate, RiskManager
from execution.routing import QuoteGate, Router
from execution.settings import Settings
from execution.sweeper import Sweeper

if TYPE_CHECKING:
    from google.cloud import firestore

    from execution.firestore.account_turns import AccountTurns
    from execution.firestore.support import CallPolicy


@dataclass(frozen=True)
class Service:
    """Everything the entry points call, built once per instance."""

    settings: Settings
    engine: ExecutionEngine
    sweeper: Sweeper
    reconciler: Reconciler
    dead_letters: DeadLetters


def firestore_client(settings: Settings) -> firestore.Client:
    """A Firestore client for the configured project (the emulator where its variable is set)."""
    from google.cloud import firestore

    return firestore.Client(project=settings.project)


def bootstrap(
    settings: Settings,
    *,
    clock: Clock | None = None,
    db: firestore.Client | None = None,
    store: InvocationStore | None = None,
    router: Router | None = None,
    risk: RiskGate | None = None,
    authority: Authority | None = None,
    broker: Broker | None = None,
    dead_letters: DeadLetters | None = None,
    fail_open_reservations: bool = False,
    ids: Callable[[], str] | None = None,
    sleep: Callable[[float], None] | None = None,
    monotonic: Callable[[], float] | None = None,
    uniform: Callable[[float, float], float] | None = None,
    turns: AccountTurns | None = None,
) -> Service:
    """Wire the service; every collaborator can be overridden (tests, other stores).

    `store` is what the engine's stages read and write through (`execution.invocation`); the
    default is Firestore's, and `fail_open_reservations` wraps its reservations in
    `BestEffortReservationManager`. `ids` (lease and paper order ids), `sleep`, `monotonic` and
    `uniform` (retry jitter) default to the system's, and `turns` (the reservation adapter's
    account turns) to the adapter's own; the deterministic simulation passes its own so that a
    seed decides them all.
    """
    _refuse_fail_open_with_a_given_store(store, fail_open_reservations)
    # Imported here so that `import main` does not pay for the Firestore adapters' imports.
    from execution.firestore.dead_letters import FirestoreDeadLetters
    from execution.firestore.placed_records import FirestorePlacedRecords
    from execution.firestore.reservation_records import FirestoreReservationRecords
    from execution.firestore.support import CallPolicy

    clock = clock or system_clock
    monotonic = monotonic or time.monotonic
    policy = CallPolicy(timeout_seconds=settings.firestore_timeout_seconds)
    db = db if db is not None else firestore_client(settings)

    if store is None:
        store = _firestore_store(
            settings,
            db,
            clock=clock,
            policy=policy,
            monotonic=monotonic,
            fail_open_reservations=fail_open_reservations,
            retry=_Retry(ids=ids, sleep=sleep, uniform=uniform, turns=turns),
        )
    if broker is None:
        broker = _broker(settings, db, clock, policy, ids)
    records = FirestoreReservationRecords(
        db,
        policy=policy,
        retention=settings.reservation_retention,
        clock_skew=timedelta(seconds=settings.clock_skew_seconds),
    )
    truth = broker_truth(records, broker, settings, clock)
    authority = authority or TradingAuthority(
        agent_mode=settings.agent_mode, env_halted=settings.execution_halted
    )
    gates = _Gates(router or _quote_gate(settings, clock), risk or _risk(settings), authority)
    placed_records = FirestorePlacedRecords(db, policy=policy)
    return Service(
        settings=settings,
        engine=_engine(settings, store, gates, broker, truth, clock),
        sweeper=_sweeper(settings, db, clock, policy, monotonic),
        reconciler=Reconciler(
            broker,
            truth,
            placed_records,
            authority=authority,
            clock=clock,
            lookback_seconds=settings.reconcile_lookback_seconds,
            deadline_seconds=settings.sweep_deadline_seconds,
            holds=records,
            markers=placed_records,
            fates=placed_records,
            last_call_seconds=settings.broker_call_seconds + settings.clock_skew_seconds,
            monotonic=monotonic,
        ),
        dead_letters=dead_letters or FirestoreDeadLetters(db, clock=clock, policy=policy),
    )


def broker_truth(
    records: ReservationRecords, broker: Broker, settings: Settings, clock: Clock
) -> BrokerTruth:
    """The broker-truth settler: no delivery of an intent can be fresh once its acquire is older
    than INTENT_MAX_AGE_SECONDS and the skew of Pub/Sub's publish time (a publish precedes
    every acquire of its message)."""
    fresh_for = settings.intent_max_age_seconds + MAX_CLOCK_SKEW_SECONDS
    return BrokerTruth(records, broker, clock=clock, no_delivery_after=timedelta(seconds=fresh_for))


def _refuse_fail_open_with_a_given_store(
    store: InvocationStore | None, fail_open_reservations: bool
) -> None:
    if store is not None and fail_open_reservations:
        raise ValueError(
            "fail_open_reservations wraps the default store's reservations; a store passed in "
            "wraps its own (FirestoreInvocationStore's wrap_reservations)"
        )


@dataclass(frozen=True)
class _Retry:
    """What the reservation adapter draws lease ids, pauses and jitter from, and the turns its
    writers take (None: the system's, the adapter's own)."""

    ids: Callable[[], str] | None
    sleep: Callable[[float], None] | None
    uniform: Callable[[float, float], float] | None
    turns: AccountTurns | None = None


def _firestore_store(
    settings: Settings,
    db: firestore.Client,
    *,
    clock: Clock,
    policy: CallPolicy,
    monotonic: Callable[[], float],
    fail_open_reservations: bool,
    retry: _Retry,
) -> InvocationStore:
    """The default store: Firestore's, one opening read per intent (`execution.invocation`)."""
    from execution.firestore.invocation import FirestoreInvocationStore
    from execution.firestore.reservations import FirestoreReservationManager

    return FirestoreInvocationStore(
        db,
        reservations=FirestoreReservationManager(
            db,
            clock=clock,
            ttl=timedelta(seconds=settings.reservation_ttl_seconds),
            policy=policy,
            retention=settings.reservation_retention,
            max_attempts=settings.reservation_max_attempts,
            sleep=retry.sleep,
            lease_ids=retry.ids,
            uniform=retry.uniform,
            clock_skew=timedelta(seconds=settings.clock_skew_seconds),
            turns=retry.turns,
        ),
        clock=clock,
        policy=policy,
        shared_read_max_age_seconds=settings.shared_read_max_age_seconds,
        monotonic=monotonic,
        wrap_reservations=BestEffortReservationManager if fail_open_reservations else None,
    )


@dataclass(frozen=True)
class _Gates:
    """The three stages between the reservation and the broker."""

    router: Router
    risk: RiskGate
    authority: Authority


def _quote_gate(settings: Settings, clock: Clock) -> QuoteGate:
    return QuoteGate(
        clock=clock,
        max_spread_bps=settings.router_max_spread_bps,
        quote_max_age_seconds=settings.router_quote_max_age_seconds,
        strict=settings.router_strict,
    )


def _risk(settings: Settings) -> RiskManager:
    return RiskManager(
        fail_open=settings.risk_fail_open, require_account=settings.require_account_document
    )


def _engine(
    settings: Settings,
    store: InvocationStore,
    gates: _Gates,
    broker: Broker,
    truth: BrokerTruth,
    clock: Clock,
) -> ExecutionEngine:
    return ExecutionEngine(
        store=store,
        router=gates.router,
        risk=gates.risk,
        authority=gates.authority,
        broker=broker,
        truth=truth,
        clock=clock,
        intent_max_age_seconds=settings.intent_max_age_seconds,
        broker_call_seconds=settings.broker_call_seconds,
        clock_skew_seconds=settings.clock_skew_seconds,
        dry_run=settings.execution_dry_run,
    )


def _sweeper(
    settings: Settings,
    db: firestore.Client,
    clock: Clock,
    policy: CallPolicy,
    monotonic: Callable[[], float],
) -> Sweeper:
    from execution.firestore.sweeper_store import FirestoreExpiredLeases

    return Sweeper(
        FirestoreExpiredLeases(db, policy=policy, retention=settings.reservation_retention),
        clock=clock,
        deadline_seconds=settings.sweep_deadline_seconds,
        monotonic=monotonic,
    )


def broker_from_settings(
    settings: Settings, db: firestore.Client, *, clock: Clock | None = None
) -> Broker:
    """The broker the settings name, as `bootstrap` builds it (the command line's lookups)."""
    from execution.firestore.support import CallPolicy

    policy = CallPolicy(timeout_seconds=settings.firestore_timeout_seconds)
    return _broker(settings, db, clock or system_clock, policy)


def _broker(
    settings: Settings,
    store: firestore.Client,
    clock: Clock,
    policy: CallPolicy,
    ids: Callable[[], str] | None = None,
) -> Broker:
    from execution.brokers.paper import PaperBroker

    if settings.broker == "paper":
        return PaperBroker(store, clock=clock, policy=policy, order_ids=ids)
    if settings.broker == "alpaca":
        from execution.brokers.alpaca import AlpacaBroker

        return AlpacaBroker.from_settings(settings)
    raise SettingsError(
        f"BROKER={settings.broker} is not available in this build; use paper or alpaca."
    )
