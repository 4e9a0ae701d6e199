"""Hand-written fakes of our own ports, with fault injection, for the fast unit tier.

Every fake implements one of the `typing.Protocol`s in `execution/` and nothing else: no mocks of
third-party clients. The reservation fake runs the real state machine (`decide_acquire`,
`new_record`, `account_state.admit`) on a dict, so the engine is tested against the rules it
ships with.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from execution.account_state import (
    AccountLimits,
    AccountState,
    Admitted,
    Hold,
    Lease,
    Refused,
    admit,
)
from execution.accounts import AccountRead, AccountSettings, AccountSource
from execution.authority import Authority, KillSwitchSource
from execution.broker_truth import BrokerTruth, Verdict, VersionedRecord
from execution.brokers.base import Broker
from execution.client_order_ids import client_order_id_for
from execution.clock import FakeClock
from execution.engine import ExecutionEngine
from execution.errors import AgentModeError
from execution.ledger import Ledger
from execution.models import BrokerOrder, OrderRequest, Outcome, TradeIntent
from execution.positions import Position, to_billionths
from execution.reservations import (
    AcquireAction,
    Acquired,
    Acquisition,
    AlreadyExecuted,
    ReleaseResult,
    ReservationManager,
    ReservationRecord,
    ReservationRequest,
    ReservationStatus,
    decide_acquire,
    new_record,
)
from execution.risk import RiskDecision, RiskGate
from execution.routing import Quote, QuoteSource, RouteDecision, Router
from execution.settings import AgentMode

T0 = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
"""The instant every fake clock starts at."""

TTL = timedelta(seconds=600)
"""The lease length the in-memory reservation manager hands out."""

MAX_AGE_SECONDS = 300.0
"""The engine's INTENT_MAX_AGE_SECONDS in these tests."""


# --- logs ----------------------------------------------------------------------------------


def logged(records: Iterable[logging.LogRecord], event: str) -> list[dict[str, Any]]:
    """The structured fields of every record with event name `event` (see `telemetry.emit`)."""
    found: list[dict[str, Any]] = []
    for record in records:
        if getattr(record, "event", None) == event:
            found.append(dict(getattr(record, "fields", {})))
    return found


# --- intents -------------------------------------------------------------------------------


def make_intent(**overrides: Any) -> TradeIntent:
    """A valid limit buy of 10 AAPL at 100 (1000 USD); override any field, `None` drops it."""
    fields: dict[str, Any] = {
        "tenant_id": "tenant-a",
        "broker_account_id": "acct-1",
        "client_intent_id": "intent-1",
        "symbol": "AAPL",
        "side": "buy",
        "qty": 10,
        "order_type": "limit",
        "limit_price": 100.0,
    }
    fields.update(overrides)
    return TradeIntent.model_validate({k: v for k, v in fields.items() if v is not None})


def client_order_id_of(intent: TradeIntent) -> str:
    """The client order id the engine sends the broker for `intent`."""
    return client_order_id_for(intent.tenant_id, intent.broker_account_id, intent.client_intent_id)


def market_intent(**overrides: Any) -> TradeIntent:
    """A market buy of 10 AAPL with no notional: its amount must come from a quote."""
    return make_intent(order_type="market", limit_price=None, **overrides)


def make_quote(
    symbol: str = "AAPL", *, bid: float = 99.99, ask: float = 100.01, ts: datetime = T0
) -> Quote:
    """A fresh, narrow quote."""
    return Quote(symbol=symbol, bid=bid, ask=ask, ts=ts)


# --- reservations --------------------------------------------------------------------------


Release = tuple[str, Outcome, str | None, str | None]
"""One call to `release`: (lease_id, outcome, error, broker_order_id)."""


class InMemoryReservationManager:
    """The real acquire rules on a dict, with fault injection and a log of every release call.

    `fail_acquire_with` is raised by the next acquires (a store outage); `fail_release_with` is
    raised by `release` after it is recorded — a handle breaking its never-raise contract, which
    only `BestEffortReservationManager` guards against.
    """

    def __init__(
        self,
        clock: FakeClock,
        *,
        ttl: timedelta = TTL,
        budgets: dict[tuple[str, str], float] | None = None,
        fail_acquire_with: BaseException | None = None,
        fail_release_with: BaseException | None = None,
    ) -> None:
        self.clock = clock
        self.ttl = ttl
        self.budgets = dict(budgets or {})
        self.fail_acquire_with = fail_acquire_with
        self.fail_release_with = fail_release_with
        self.records: dict[tuple[str, str], ReservationRecord] = {}
        self.inflight: dict[tuple[str, str], AccountState] = {}
        self.requests: list[ReservationRequest] = []
        self.releases: list[Release] = []
        self._lease_ids = (f"lease-{n}" for n in itertools.count(1))

    def acquire(self, request: ReservationRequest) -> Acquisition:
        """Reserve `request`'s intent, as one Firestore transaction would."""
        self.requests.append(request)
        if self.fail_acquire_with is not None:
            raise self.fail_acquire_with
        now = self.clock()
        key = (request.tenant_id, request.client_intent_id)
        existing = self.records.get(key)
        action = decide_acquire(existing, request, now)
        if action is AcquireAction.DUPLICATE:
            assert existing is not None
            return AlreadyExecuted(existing)
        lease_id = next(self._lease_ids)
        account = (request.tenant_id, request.broker_account_id)
        budget = self.budgets.get(account)
        counts, refused = False, None
        if budget is not None and request.enforce_budget:
            state = self.inflight.setdefault(account, AccountState())
            lease = Lease(
                request.client_intent_id,
                request.amount_usd,
                now + self.ttl,
                request.symbol,
                request.side,
                request.qty,
            )
            admission = admit(
                state,
                now=now,
                lease_id=lease_id,
                lease=lease,
                limits=AccountLimits(max_inflight_usd=budget),
            )
            if isinstance(admission, Admitted):
                state.leases, counts = admission.leases, True
            elif isinstance(admission, Refused):
                refused = admission.reason
        record = new_record(
            request,
            previous=existing,
            lease_id=lease_id,
            now=now,
            ttl=self.ttl,
            counts_against_budget=counts,
        )
        self.records[key] = record
        return Acquired(InMemoryHandle(self, record), refused)

    def seed(self, record: ReservationRecord) -> None:
        """Store `record` as if an earlier delivery had written it."""
        self.records[(record.tenant_id, record.client_intent_id)] = record

    def record_for(self, intent: TradeIntent) -> ReservationRecord:
        """The reservation stored for `intent`."""
        return self.records[(intent.tenant_id, intent.client_intent_id)]

    def releases_of(self, lease_id: str) -> list[Release]:
        """Every release call made with `lease_id`."""
        return [call for call in self.releases if call[0] == lease_id]

    def _release(
        self,
        handle: InMemoryHandle,
        outcome: Outcome,
        error: str | None,
        broker_order_id: str | None,
        fate_unknown: bool = False,
    ) -> ReleaseResult:
        held = handle.record
        self.releases.append((held.lease_id, outcome, error, broker_order_id))
        if self.fail_release_with is not None:
            raise self.fail_release_with
        key = (held.tenant_id, held.client_intent_id)
        current = self.records.get(key)
        # Fenced and idempotent, as the Firestore handle is: only our lease, only once.
        if current is None or current.lease_id != held.lease_id:
            return ReleaseResult.FENCED
        if current.status is ReservationStatus.RELEASED:
            return ReleaseResult.RECORDED
        # As the Firestore handle does: a hold whose fate is unknown keeps counting.
        kept = current.counted_lease_id if fate_unknown else None
        self.records[key] = replace(
            current,
            status=ReservationStatus.RELEASED,
            released_at=self.clock(),
            outcome=outcome,
            error=error,
            broker_order_id=broker_order_id,
            counted_lease_id=kept,
        )
        state = self.inflight.get((held.tenant_id, held.broker_account_id))
        if state is not None and current.counted_lease_id in state.leases:
            if kept is None:
                del state.leases[current.counted_lease_id]
            else:  # the lease ends (the budget is free); the hold stays
                ended = replace(state.leases[current.counted_lease_id], expires_at=self.clock())
                state.leases[current.counted_lease_id] = ended
        return ReleaseResult.RECORDED

    # The `ReservationRecords` port, for `BrokerTruth`: the record's version is the record itself.

    def read(self, tenant_id: str, client_intent_id: str) -> VersionedRecord | None:
        record = self.records.get((tenant_id, client_intent_id))
        return None if record is None else VersionedRecord(record, record)

    def record_order(
        self, current: VersionedRecord, order: BrokerOrder, repair: dict[str, Any], now: datetime
    ) -> bool:
        key = (current.record.tenant_id, current.record.client_intent_id)
        if self.records.get(key) is not current.version:
            return False
        self.records[key] = replace(
            current.record,
            status=ReservationStatus.RELEASED,
            outcome=Outcome.PLACED,
            broker_order_id=order.broker_order_id,
            error=None,
            released_at=current.record.released_at or now,
            repair=repair,
            counted_lease_id=None,
            unsettled_order=None,
        )
        return True

    def mark_unsettled(self, tenant_id: str, client_intent_id: str, marker: dict[str, Any]) -> bool:
        record = self.records.get((tenant_id, client_intent_id))
        if record is None:
            return False
        self.records[(tenant_id, client_intent_id)] = replace(record, unsettled_order=marker)
        return True

    def clear_unsettled(self, current: VersionedRecord) -> bool:
        key = (current.record.tenant_id, current.record.client_intent_id)
        if self.records.get(key) is not current.version:
            return False
        self.records[key] = replace(current.record, unsettled_order=None)
        return True

    def record_verdict(self, current: VersionedRecord, verdict: Verdict, now: datetime) -> bool:
        key = (current.record.tenant_id, current.record.client_intent_id)
        if self.records.get(key) is not current.version:
            return False
        record = current.record
        self.records[key] = replace(
            record,
            status=ReservationStatus.RELEASED,
            outcome=verdict.outcome,
            broker_order_id=verdict.broker_order_id,
            error=verdict.error,
            released_at=record.released_at or now,
            repair=verdict.repair,
            counted_lease_id=None,
        )
        state = self.inflight.get((record.tenant_id, record.broker_account_id))
        if state is not None and record.counted_lease_id is not None:
            state.leases.pop(record.counted_lease_id, None)
        if state is not None and verdict.gives_back_position:
            signed = record.qty if record.side == "buy" else -record.qty
            state.positions[record.symbol] = state.positions.get(record.symbol, 0.0) - signed
        return True

    def release_hold(self, hold: Hold, current: VersionedRecord) -> bool:
        key = (current.record.tenant_id, current.record.client_intent_id)
        if self.records.get(key) is not current.version:
            return False
        if current.record.counted_lease_id == hold.lease_id:
            self.records[key] = replace(current.record, counted_lease_id=None)
        state = self.inflight.get((hold.tenant_id, hold.broker_account_id))
        if state is not None:
            state.leases.pop(hold.lease_id, None)
        return True

    def settle_orphan(self, hold: Hold, order: BrokerOrder | None, now: datetime) -> bool:
        state = self.inflight.get((hold.tenant_id, hold.broker_account_id))
        lease = state.leases.pop(hold.lease_id, None) if state is not None else None
        if state is None or lease is None:
            return False
        if order is not None:
            held = state.positions.get(lease.symbol, Position())
            state.positions[lease.symbol] = held.plus(to_billionths(lease.signed_qty()))
        return True


class InMemoryHandle:
    """The lease an `InMemoryReservationManager` hands out."""

    def __init__(self, manager: InMemoryReservationManager, record: ReservationRecord) -> None:
        self._manager = manager
        self.record = record

    @property
    def lease_id(self) -> str:
        return self.record.lease_id

    @property
    def attempt(self) -> int:
        return self.record.attempt

    @property
    def client_order_id(self) -> str:
        return self.record.client_order_id

    @property
    def expires_at(self) -> datetime:
        return self.record.expires_at

    def release(
        self,
        outcome: Outcome,
        *,
        error: str | None = None,
        broker_order_id: str | None = None,
        fate_unknown: bool = False,
    ) -> ReleaseResult:
        return self._manager._release(self, outcome, error, broker_order_id, fate_unknown)


def make_record(**overrides: Any) -> ReservationRecord:
    """A reservation record for `make_intent()`'s ids, reserved at T0 by `lease-0`."""
    intent = make_intent()
    fields: dict[str, Any] = {
        "tenant_id": intent.tenant_id,
        "broker_account_id": intent.broker_account_id,
        "client_intent_id": intent.client_intent_id,
        "symbol": intent.symbol,
        "amount_usd": 1000.0,
        "status": ReservationStatus.RESERVED,
        "lease_id": "lease-0",
        "attempt": 1,
        "created_at": T0,
        "expires_at": T0 + TTL,
        "payload_hash": intent.payload_hash(),
    }
    fields.update(overrides)
    return ReservationRecord(**fields)


def make_request(**overrides: Any) -> ReservationRequest:
    """A reservation request for `make_intent()`."""
    intent = make_intent()
    fields: dict[str, Any] = {
        "tenant_id": intent.tenant_id,
        "broker_account_id": intent.broker_account_id,
        "client_intent_id": intent.client_intent_id,
        "symbol": intent.symbol,
        "amount_usd": 1000.0,
        "payload_hash": intent.payload_hash(),
    }
    fields.update(overrides)
    return ReservationRequest(**fields)


class ScriptedReservationManager:
    """A manager that answers each acquire from a script: an `Acquisition` or an exception."""

    def __init__(self, *answers: Acquisition | BaseException) -> None:
        self._answers = list(answers)
        self.requests: list[ReservationRequest] = []

    def acquire(self, request: ReservationRequest) -> Acquisition:
        self.requests.append(request)
        answer = self._answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


class RaisingHandle:
    """A handle whose `release` breaks the contract and raises (counts its calls)."""

    def __init__(
        self, error: BaseException, *, lease_id: str = "lease-x", attempt: int = 1
    ) -> None:
        self._error = error
        self._lease_id = lease_id
        self._attempt = attempt
        self.calls: list[Outcome] = []

    @property
    def lease_id(self) -> str:
        return self._lease_id

    @property
    def attempt(self) -> int:
        return self._attempt

    @property
    def client_order_id(self) -> str:
        return "ex1-raising"

    @property
    def expires_at(self) -> datetime | None:
        return None

    def release(
        self,
        outcome: Outcome,
        *,
        error: str | None = None,
        broker_order_id: str | None = None,
        fate_unknown: bool = False,
    ) -> ReleaseResult:
        self.calls.append(outcome)
        raise self._error


# --- broker, quotes, stages ----------------------------------------------------------------


class RecordingBroker:
    """A broker that fills every order, dedupes `client_order_id`, and can fail on demand.

    `fail_with(exc, times=n)` makes the next `n` `place_order` calls raise `exc` (before anything
    is placed). `calls` counts every `place_order` call; `orders` holds the orders placed.
    """

    def __init__(self, *, is_paper: bool = True) -> None:
        self.is_paper = is_paper
        self.calls: list[OrderRequest] = []
        self.orders: dict[str, BrokerOrder] = {}
        self.cancelled: list[str] = []
        self._failures: list[BaseException] = []
        self._ids = (f"order-{n}" for n in itertools.count(1))

    def fail_with(self, exc: BaseException, *, times: int = 1) -> None:
        """Raise `exc` from the next `times` calls to `place_order`."""
        self._failures.extend([exc] * times)

    def place_order(self, order: OrderRequest) -> BrokerOrder:
        self.calls.append(order)
        if self._failures:
            raise self._failures.pop(0)
        existing = self.orders.get(order.client_order_id)
        if existing is not None:
            return existing
        placed = BrokerOrder.for_request(
            order,
            broker_order_id=next(self._ids),
            status="filled",
            submitted_at=None,
            filled_avg_price=order.limit_price or order.reference_price,
        )
        self.orders[order.client_order_id] = placed
        return placed

    def get_order_by_client_order_id(
        self, tenant_id: str, broker_account_id: str, client_order_id: str
    ) -> BrokerOrder | None:
        return self.orders.get(client_order_id)

    def get_order(
        self, tenant_id: str, broker_account_id: str, broker_order_id: str
    ) -> BrokerOrder | None:
        return next((o for o in self.orders.values() if o.broker_order_id == broker_order_id), None)

    def cancel_order(self, tenant_id: str, broker_account_id: str, broker_order_id: str) -> None:
        self.cancelled.append(broker_order_id)


class FakeQuotes:
    """Quotes from a dict; `error` is raised by every read while set. Counts reads."""

    def __init__(
        self, quotes: dict[str, Quote] | None = None, *, error: BaseException | None = None
    ) -> None:
        self.quotes = dict(quotes or {})
        self.error = error
        self.reads: list[str] = []

    def latest(self, symbol: str) -> Quote | None:
        self.reads.append(symbol)
        if self.error is not None:
            raise self.error
        return self.quotes.get(symbol)


class FakeRouter:
    """Answers every route with `decision`, or raises `error`; records the quotes it was given."""

    def __init__(
        self, decision: RouteDecision | None = None, *, error: BaseException | None = None
    ) -> None:
        self.decision = decision or RouteDecision(True)
        self.error = error
        self.seen: list[Quote | None] = []

    def route(self, intent: TradeIntent, quote: Quote | None) -> RouteDecision:
        self.seen.append(quote)
        if self.error is not None:
            raise self.error
        return self.decision


class FakeRisk:
    """Answers every validation with `decision`, or raises `error`; records amounts judged."""

    def __init__(
        self, decision: RiskDecision | None = None, *, error: BaseException | None = None
    ) -> None:
        self.decision = decision or RiskDecision(True)
        self.error = error
        self.amounts: list[float] = []
        self.accounts: list[AccountRead] = []

    def validate(
        self, intent: TradeIntent, amount_usd: float, account: AccountRead
    ) -> RiskDecision:
        self.amounts.append(amount_usd)
        self.accounts.append(account)
        if self.error is not None:
            raise self.error
        return self.decision


class FakeAuthority:
    """Allows everything unless `error` is set (AgentModeError, ExecutionHaltedError, anything)."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error
        self.checks: list[bool] = []
        self.account_modes: list[AgentMode | None] = []

    def check(
        self,
        intent: TradeIntent,
        *,
        broker_is_paper: bool,
        switches: KillSwitchSource,
        account_mode: AgentMode | None = None,
    ) -> None:
        self.checks.append(broker_is_paper)
        self.account_modes.append(account_mode)
        if self.error is not None:
            raise self.error

    def check_mode(self, *, broker_is_paper: bool, account_mode: AgentMode | None = None) -> None:
        if isinstance(self.error, AgentModeError):
            raise self.error


class FakeKillSwitches:
    """Kill switches for `TradingAuthority`: a global one, per-tenant ones, or a read failure."""

    def __init__(
        self,
        *,
        global_on: bool = False,
        tenants: set[str] | None = None,
        error: BaseException | None = None,
    ) -> None:
        self.global_on = global_on
        self.tenants = set(tenants or set())
        self.error = error

    def engaged(self, tenant_id: str) -> str | None:
        if self.error is not None:
            raise self.error
        if self.global_on:
            return "global"
        if tenant_id in self.tenants:
            return "tenant"
        return None


class FakeAccounts:
    """Account settings for the engine from a dict keyed by (tenant, account), or a failure."""

    def __init__(
        self,
        accounts: dict[tuple[str, str], AccountSettings] | None = None,
        *,
        error: BaseException | None = None,
    ) -> None:
        self.accounts = dict(accounts or {})
        self.error = error

    def get(self, tenant_id: str, broker_account_id: str) -> AccountSettings | None:
        if self.error is not None:
            raise self.error
        return self.accounts.get((tenant_id, broker_account_id))


class RecordingLedger:
    """Records every trade written; raises `error` instead while it is set."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error
        self.trades: list[tuple[TradeIntent, BrokerOrder]] = []

    def record_trade(self, intent: TradeIntent, order: BrokerOrder) -> None:
        if self.error is not None:
            raise self.error
        self.trades.append((intent, order))


# --- the engine ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SeparatePorts:
    """Independent ports as an `InvocationStore`: each reads and writes when asked, nothing held."""

    reservations: ReservationManager
    quotes: QuoteSource
    accounts: AccountSource
    switches: KillSwitchSource
    ledger: Ledger

    def open(self, intent: TradeIntent) -> SeparatePorts:
        """The same ports for every intent."""
        return self

    def flush(self) -> None:
        """Nothing is held: every write was made when asked."""


@dataclass
class Rig:
    """An engine and the fakes it was built from, so a test can poke and inspect each one."""

    engine: ExecutionEngine
    clock: FakeClock
    reservations: Any
    quotes: FakeQuotes
    router: Any
    risk: Any
    authority: Any
    broker: RecordingBroker
    ledger: RecordingLedger
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def manager(self) -> InMemoryReservationManager:
        """The in-memory manager (fails if the rig was built with another one)."""
        assert isinstance(self.reservations, InMemoryReservationManager)
        return self.reservations


BROKER_CALL_SECONDS = 10.0


class NoRecords:
    """A `ReservationRecords` that holds nothing (for reservation managers of other kinds)."""

    def read(self, tenant_id: str, client_intent_id: str) -> VersionedRecord | None:
        return None

    def record_order(
        self, current: VersionedRecord, order: BrokerOrder, repair: dict[str, Any], now: datetime
    ) -> bool:
        return False

    def mark_unsettled(self, tenant_id: str, client_intent_id: str, marker: dict[str, Any]) -> bool:
        return False

    def clear_unsettled(self, current: VersionedRecord) -> bool:
        return False

    def record_verdict(self, current: VersionedRecord, verdict: Verdict, now: datetime) -> bool:
        return False

    def release_hold(self, hold: Hold, current: VersionedRecord) -> bool:
        return False

    def settle_orphan(self, hold: Hold, order: BrokerOrder | None, now: datetime) -> bool:
        return False


def make_engine(**overrides: Any) -> Rig:
    """An engine on fakes that places every order; override any collaborator or setting.

    Keywords: `clock`, `reservations`, `quotes`, `router`, `accounts`, `risk`, `authority`,
    `switches`, `broker`, `ledger`,
    `intent_max_age_seconds`, `dry_run`. The default reservation manager is in memory on `clock`.
    """
    clock: FakeClock = overrides.pop("clock", None) or FakeClock(T0)
    reservations: ReservationManager = overrides.pop(
        "reservations", None
    ) or InMemoryReservationManager(clock)
    quotes: FakeQuotes = overrides.pop("quotes", None) or FakeQuotes({"AAPL": make_quote()})
    router: Router = overrides.pop("router", None) or FakeRouter()
    accounts: AccountSource = overrides.pop("accounts", None) or FakeAccounts()
    risk: RiskGate = overrides.pop("risk", None) or FakeRisk()
    authority: Authority = overrides.pop("authority", None) or FakeAuthority()
    broker: RecordingBroker = overrides.pop("broker", None) or RecordingBroker()
    ledger: RecordingLedger = overrides.pop("ledger", None) or RecordingLedger()
    switches: KillSwitchSource = overrides.pop("switches", None) or FakeKillSwitches()
    max_age = overrides.pop("intent_max_age_seconds", MAX_AGE_SECONDS)
    dry_run = overrides.pop("dry_run", False)
    if overrides:
        raise TypeError(f"make_engine got unknown overrides: {sorted(overrides)}")
    port: Broker = broker
    engine = ExecutionEngine(
        store=SeparatePorts(
            reservations=reservations,
            quotes=quotes,
            accounts=accounts,
            switches=switches,
            ledger=ledger,
        ),
        router=router,
        risk=risk,
        authority=authority,
        broker=port,
        truth=BrokerTruth(
            reservations if isinstance(reservations, InMemoryReservationManager) else NoRecords(),
            port,
            clock=clock,
        ),
        clock=clock,
        intent_max_age_seconds=max_age,
        broker_call_seconds=BROKER_CALL_SECONDS,
        clock_skew_seconds=5.0,
        dry_run=dry_run,
    )
    return Rig(engine, clock, reservations, quotes, router, risk, authority, broker, ledger)
