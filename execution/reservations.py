"""Reservations: the lease an invocation holds on one intent while it executes.

This module owns the state machine and the ports; storage adapters (`execution.firestore`) only
read and write records. Life of one reservation document, by the clock of the invocations::

    acquire ──▶ reserved ─────────────── release(outcome) ──▶ released
                   │  created_at    expires_at = created_at + TTL
                   │──────────────────────│
                   │  lease held:         │ lease lapsed: the next delivery takes over
                   │  deliveries retry    │ (attempt + 1); the sweeper may mark it expired
                   ▼                      ▼
    released/expired + terminal outcome   → duplicate: the recorded result, never re-executed
    released/expired + retryable outcome  → re-acquired by the next delivery (attempt + 1)

Fencing: only the holder of `lease_id` may release or expire a document, so an invocation that
outlived its lease can never overwrite the attempt that took over from it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from execution.errors import (
    LimitWaitError,
    PayloadConflictError,
    ReservationInFlightError,
)
from execution.models import RETRYABLE_OUTCOMES, TERMINAL_OUTCOMES, Outcome
from execution.telemetry import emit

logger = logging.getLogger(__name__)


class ReservationStatus(StrEnum):
    """The `status` field of a reservation document (contract)."""

    RESERVED = "reserved"
    RELEASED = "released"
    EXPIRED = "expired"


@dataclass(frozen=True)
class ReservationRequest:
    """What an invocation asks to reserve for one intent."""

    tenant_id: str
    broker_account_id: str
    client_intent_id: str
    symbol: str
    amount_usd: float
    payload_hash: str
    enforce_budget: bool = True
    """False: no per-account limit is counted (a stale intent, only recorded, never executed)."""
    side: str = ""
    qty: float = 0.0
    client_order_id: str = ""
    """What the broker is sent (`execution.client_order_ids`); kept by every later attempt."""


@dataclass(frozen=True)
class ReservationRecord:
    """One reservation document (contract fields), free of any storage type."""

    tenant_id: str
    broker_account_id: str
    client_intent_id: str
    symbol: str
    amount_usd: float
    status: ReservationStatus
    lease_id: str
    attempt: int
    created_at: datetime
    expires_at: datetime
    payload_hash: str
    released_at: datetime | None = None
    outcome: Outcome | None = None
    error: str | None = None
    broker_order_id: str | None = None
    side: str = ""
    qty: float = 0.0
    counts_against_budget: bool = False
    """True where this attempt's lease was admitted against the account's limits."""
    counted_lease_id: str | None = None
    """The key of the hold that counts this intent in its account's state (`leases`), while the
    fate of an order under its client order id is unknown; None where nothing counts it. This
    attempt's lease where it was admitted, else the earlier attempt's hold it inherited."""
    client_order_id: str = ""
    """The id the broker knows this intent's order by; the first attempt's, kept by later ones."""
    repair: dict[str, object] | None = None
    """Set where the record was brought to what the broker holds (`execution.broker_truth`)."""
    unsettled_order: dict[str, object] | None = None
    """Left by an outlived attempt whose order (or lost answer) could not be settled while a newer
    attempt held the lease: the next delivery asks the broker before it answers `duplicate`."""


class AcquireAction(StrEnum):
    """What acquire must write, decided from the document as read."""

    CREATE = "create"
    TAKE_OVER = "take_over"
    DUPLICATE = "duplicate"


def decide_acquire(
    existing: ReservationRecord | None, request: ReservationRequest, now: datetime
) -> AcquireAction:
    """Apply the acquire rules of ARCHITECTURE.md to the document as read.

    Raises `PayloadConflictError` for a reused id with another payload and
    `ReservationInFlightError` while another invocation's lease is unexpired.
    """
    if existing is None:
        return AcquireAction.CREATE
    if existing.payload_hash != request.payload_hash:
        raise PayloadConflictError(
            f"client_intent_id {request.client_intent_id!r} was already used for a different "
            "payload; publish the new intent under a new client_intent_id"
        )
    if existing.status is ReservationStatus.RESERVED:
        if existing.expires_at > now:
            raise ReservationInFlightError(
                f"intent {request.client_intent_id!r} is held by lease {existing.lease_id} "
                f"until {existing.expires_at.isoformat()}"
            )
        return AcquireAction.TAKE_OVER
    if existing.outcome in TERMINAL_OUTCOMES:
        return AcquireAction.DUPLICATE
    if existing.outcome in RETRYABLE_OUTCOMES or existing.outcome is None:
        return AcquireAction.TAKE_OVER
    raise AssertionError(f"unhandled reservation state {existing.status}/{existing.outcome}")


def new_record(
    request: ReservationRequest,
    *,
    previous: ReservationRecord | None,
    lease_id: str,
    now: datetime,
    ttl: timedelta,
    counts_against_budget: bool,
) -> ReservationRecord:
    """The `reserved` record a successful acquire writes (attempt 1, or the previous + 1)."""
    return ReservationRecord(
        tenant_id=request.tenant_id,
        broker_account_id=request.broker_account_id,
        client_intent_id=request.client_intent_id,
        symbol=request.symbol,
        amount_usd=request.amount_usd,
        status=ReservationStatus.RESERVED,
        lease_id=lease_id,
        attempt=1 if previous is None else previous.attempt + 1,
        created_at=now,
        expires_at=now + ttl,
        payload_hash=request.payload_hash,
        side=request.side,
        qty=request.qty,
        counts_against_budget=counts_against_budget,
        # An admission takes the earlier hold over; otherwise the earlier hold, if any, still
        # counts whatever an earlier attempt may have placed, until this attempt learns its fate.
        counted_lease_id=lease_id
        if counts_against_budget
        else (previous.counted_lease_id if previous else None),
        # An earlier attempt may have reached the broker under its id: every attempt uses it.
        client_order_id=(previous.client_order_id if previous else "") or request.client_order_id,
    )


class ReleaseResult(StrEnum):
    """What a release did."""

    RECORDED = "recorded"
    """The outcome is on the document (now, or by an earlier call of this handle)."""
    FENCED = "fenced"
    """A newer attempt held or ended the intent: nothing was written. Where the outcome is an
    order, the record may contradict the broker: the engine settles it (`BrokerTruth`)."""
    UNRECORDED = "unrecorded"
    """The store could not record it (the handle raised; the engine answers this); the lease
    lapses and the sweeper or a redelivery ends it."""


class ReservationHandle(Protocol):
    """The lease an invocation holds; `release` ends it."""

    @property
    def lease_id(self) -> str:
        """The lease this handle fences on."""
        ...

    @property
    def attempt(self) -> int:
        """1 for the first execution of the intent, +1 per take-over or re-acquire."""
        ...

    @property
    def client_order_id(self) -> str:
        """The id this intent's order carries at the broker (the reservation's field)."""
        ...

    @property
    def expires_at(self) -> datetime | None:
        """When the lease lapses and another attempt may take over; None where none is held."""
        ...

    def release(
        self,
        outcome: Outcome,
        *,
        error: str | None = None,
        broker_order_id: str | None = None,
        fate_unknown: bool = False,
    ) -> ReleaseResult:
        """End the lease with `outcome`.

        `fate_unknown`: an order under the intent's client order id may exist that `outcome` does
        not name (a broker call whose answer was lost; an earlier attempt's call never looked up);
        the intent's hold then keeps counting against the account's position and daily orders
        (`execution.account_state`). Must be idempotent (a second call after an answer changes
        nothing) and must change the document only while it still carries this handle's
        `lease_id` (a fenced release changes nothing: FENCED). Raises where the store fails
        (`StoreUnavailableError`, `ReservationContentionError`, ...): release never raises into
        the flow because its one caller, `ExecutionEngine._release`, contains every raise (logs
        it, answers UNRECORDED and leaves the lease to a redelivery or the sweeper).
        """
        ...


@dataclass(frozen=True)
class Acquired:
    """The invocation holds the lease and must execute, then release."""

    handle: ReservationHandle
    refused: str | None = None
    """A per-account limit this intent can never pass (see `execution.account_state`): the
    invocation must end it `rejected` with this reason, before any broker call."""


@dataclass(frozen=True)
class AlreadyExecuted:
    """The intent ended before with a terminal outcome: report it, never execute again."""

    record: ReservationRecord


Acquisition = Acquired | AlreadyExecuted


class ReservationManager(Protocol):
    """Acquires reservations; the port the engine depends on."""

    def acquire(self, request: ReservationRequest) -> Acquisition:
        """Reserve `request`'s intent or report it already executed.

        Raises `ReservationInFlightError` (another lease is live), `LimitWaitError` (an account
        limit is full of intents in flight; `BudgetWaitError` for the budget),
        `ReservationContentionError` (bounded attempts lost
        to concurrent writers), `StoreUnavailableError` (store unreachable) — all retryable — and
        `PayloadConflictError` (permanent).
        """
        ...


class NoopHandle:
    """A handle that holds nothing: what fail-open acquisition hands out."""

    def __init__(self, client_order_id: str, attempt: int = 0) -> None:
        self._client_order_id = client_order_id
        self._attempt = attempt

    @property
    def lease_id(self) -> str:
        return ""

    @property
    def attempt(self) -> int:
        return self._attempt

    @property
    def client_order_id(self) -> str:
        return self._client_order_id

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
        return ReleaseResult.RECORDED


class BestEffortReservationManager:
    """Fail-open wrapper: a store failure at acquire never blocks trading.

    Answers are passed through — a live lease elsewhere, a full limit, a payload conflict, an
    intent already executed — because they are the store working, not failing. What fails open is
    the store being unreachable or contended (or any unexpected error): the intent then executes
    with a no-op handle and relies on the broker's `client_order_id` dedupe alone. Explicit opt-in;
    the default wiring is strict.
    """

    _ANSWERS = (ReservationInFlightError, LimitWaitError, PayloadConflictError)

    def __init__(self, inner: ReservationManager) -> None:
        self._inner = inner

    def acquire(self, request: ReservationRequest) -> Acquisition:
        """Acquire through the wrapped manager, or hand out a no-op handle if it fails."""
        try:
            return self._inner.acquire(request)
        except self._ANSWERS:
            raise
        except Exception as exc:  # unreachable, contended or faulty store: fail open
            emit(
                logger,
                "exec.reservation.fail_open",
                logging.WARNING,
                client_intent_id=request.client_intent_id,
                error=repr(exc),
            )
            return Acquired(NoopHandle(request.client_order_id))
