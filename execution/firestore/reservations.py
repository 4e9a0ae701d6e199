"""`FirestoreReservationManager`: the reservation state machine on Firestore, without transactions.

Each acquire is one read (`get_all` of the reservation, the account and its in-flight document)
and one atomic batch guarded by preconditions: `create` where the document was absent, an update
conditioned on the `update_time` we read where it existed. A lost race fails the whole batch with
`AlreadyExists`/`FailedPrecondition`; we read again after a jittered pause, a bounded number of
times (`support.Attempts`: the one loop of acquire and release, each attempt a read, a decision,
a batch and a commit). An invocation that read the account and in-flight documents at its start
passes them as `budget_read`: the first attempt then creates the reservation without reading it,
since a fresh intent's document does not exist yet; where it does (a redelivery, a duplicate),
the `create` fails (`AlreadyExists`) and the same attempt reads the reservation alone: a
duplicate (or a live lease elsewhere, or a payload conflict) is answered from it, 3 documents
read in all with the opening read; anything else (a take-over, our own create whose answer was
lost, a lost race on the state) goes on to the attempts that read all three, at once. The
emulator's pessimistic transactions livelock under exactly the contention this handles
(docs/EMULATOR-FACTS.md, F1); preconditions never hold a lock, so contention is cheap and
always ends. The reservation's writes are encoded by `execution.firestore.lean_writes` (the
library's own `Write` messages, cheaper to build).

Within one process the writers of one limited account's state document take turns
(`execution.firestore.account_turns`): an acquire holds the account's turn from its read to its
commit, a counted lease's release for its commit. Without them the invocations of one instance
on one hot account read the same version and all but one lose every round (a 64-intent burst
answered `ReservationContentionError` to a quarter of its intents); with them a read is current
when its commit lands. A writer hands the state it committed (and the `update_time` its commit
answered) to the next in line, which decides on it without a read: the acquire creates its
reservation and rewrites the state under a precondition on that `update_time`, the release ends
its hold under it. An acquire that waited and was handed nothing reads first. The writer whose
turn comes carries out the work waiting in line with its own, acquires of fresh intents and
releases of counted leases alike: decided in order on one state, written with one batch that
writes the state once (`carry_line`); where that batch fails, each writer does its own alone.
The preconditions still decide every race, between instances too: a handed state that is stale
fails its commit, and the writer reads, as after any lost race.

The same batch writes the account's state document where the account sets a counting limit
(`max_inflight_usd`, `max_daily_orders`, `max_position_qty`), so every such limit is decided
against what the commit's precondition proves current (`execution.account_state`). A release of
`placed` moves the lease into the account's position and daily count in the batch that ends its
record, with its ledger entry (`execution.firestore.account_state.add_placed_order`; in a
carried line, the state the line leaves, written whole under the precondition).

Documents:
  tenants/{tenant_id}/execution_reservations/{client_intent_id}   one per intent (contract)
  tenants/{tenant_id}/accounts/{broker_account_id}                the limits (contract)
  tenants/{tenant_id}/execution_inflight/{broker_account_id}      the account's state
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from execution.account_state import (
    DEFAULT_CLOCK_SKEW_SECONDS,
    AccountLimits,
    AccountState,
    Admitted,
    Lease,
    Refused,
    admit,
)
from execution.clock import Clock
from execution.documents import (
    MalformedDocumentError,
    ended_fields,
    reservation_from_document,
    reservation_to_document,
)
from execution.errors import (
    InvalidIntentError,
    LimitWaitError,
    ReservationContentionError,
    StoreUnavailableError,
)
from execution.firestore import lean_writes
from execution.firestore.account_state import (
    StagedEnd,
    holds_no_position,
    limits_from_account,
    log_kept_hold,
    order_days_in,
    stage_admission,
    stage_attempt_end,
    state_after_end,
    state_from_document,
)
from execution.firestore.account_turns import (
    DEFAULT_TIMEOUT_SECONDS,
    AccountTurns,
    KnownState,
    Queued,
    Turn,
)
from execution.firestore.paths import RESERVATIONS as RESERVATIONS
from execution.firestore.paths import account_path, inflight_path
from execution.firestore.paths import account_ref as account_ref
from execution.firestore.paths import inflight_ref as inflight_ref
from execution.firestore.paths import reservation_ref as reservation_ref
from execution.firestore.staged_writes import StagedWrites
from execution.firestore.support import (
    RACE_ERRORS,
    Attempts,
    CallPolicy,
    Retry,
    jitter_sleep,
    snapshot_data,
    store_errors,
)
from execution.models import Outcome
from execution.reservations import (
    AcquireAction,
    Acquired,
    Acquisition,
    AlreadyExecuted,
    ReleaseResult,
    ReservationRecord,
    ReservationRequest,
    ReservationStatus,
    decide_acquire,
    new_record,
)
from execution.telemetry import emit

logger = logging.getLogger(__name__)

Snapshot = firestore.DocumentSnapshot[firestore.DocumentReference]

# The most pieces one line's batch carries: with its rider each writes at most two documents,
# well inside a commit's 500 writes; the rest of a longer line do their own.
MAX_CARRIED = 100

# The names this adapter had for the document's one parse and write (bench and tests import them).
record_from_document = reservation_from_document
record_to_document = reservation_to_document


@dataclass(frozen=True)
class BudgetRead:
    """An account's settings and in-flight documents, as one read returned them."""

    account: Snapshot
    inflight: Snapshot


def budget_refs(
    db: firestore.Client, tenant_id: str, broker_account_id: str
) -> tuple[firestore.DocumentReference, firestore.DocumentReference]:
    """The account and in-flight documents of one account, in `BudgetRead` order."""
    return account_ref(db, tenant_id, broker_account_id), inflight_ref(
        db, tenant_id, broker_account_id
    )


@dataclass(frozen=True)
class _AcquireRead:
    """What one acquire attempt decides on; `reservation` is None where it was not read, and
    `state` is a `KnownState` where the writer before in line handed it over."""

    reservation: Snapshot | None
    account: Snapshot
    state: Snapshot | KnownState
    reservation_only: bool = False
    """Only the reservation was read now; the account and state are the opening read's."""

    @cached_property
    def known(self) -> KnownState:
        """The account's state, parsed once (where it was read, not handed over)."""
        if isinstance(self.state, KnownState):
            return self.state
        return _known_from(self.state)


class FirestoreReservationManager:
    """Reservations in Firestore; see the module docstring for the write protocol."""

    def __init__(
        self,
        db: firestore.Client,
        *,
        clock: Clock,
        ttl: timedelta,
        policy: CallPolicy,
        retention: timedelta = timedelta(days=30),
        max_attempts: int = 12,
        sleep: Callable[[float], None] | None = None,
        lease_ids: Callable[[], str] | None = None,
        uniform: Callable[[float, float], float] | None = None,
        turns: AccountTurns | None = None,
        clock_skew: timedelta = timedelta(seconds=DEFAULT_CLOCK_SKEW_SECONDS),
    ) -> None:
        """`sleep`, `lease_ids` and `uniform` (the jitter's randomness) default to the system's;
        a simulation injects its own so that a seed decides them. `turns` orders this process's
        writers of one account's state document (`execution.firestore.account_turns`).
        `clock_skew`: CLOCK_SKEW_SECONDS (a placed order counts on each day it spans)."""
        self._db = db
        self._clock_skew = clock_skew
        self._clock = clock
        self._ttl = ttl
        self._retention = retention
        self._policy = policy
        self._max_attempts = max_attempts
        self._sleep = sleep
        self._lease_ids = lease_ids or _new_lease_id
        self._uniform = uniform
        # Where sleeps are injected, the caller (a simulation) decides the interleaving: a real
        # wait for a turn its parked actor holds would stall it, so turns are never waited for.
        self._turns = turns or AccountTurns(
            timeout_seconds=0.0 if sleep is not None else DEFAULT_TIMEOUT_SECONDS
        )

    def acquire(
        self,
        request: ReservationRequest,
        *,
        budget_read: BudgetRead | None = None,
        riders: StagedWrites | None = None,
    ) -> Acquisition:
        """Reserve the intent or report it executed; see `ReservationManager.acquire`.

        `budget_read` spares the first read (see the module docstring); `riders` are written by
        the handle's release batch.
        """
        lease_id = self._lease_ids()
        if budget_read is not None:
            _check_read_is_of(budget_read, request)
        if not _writes_account_state(request, budget_read):
            opening = None if budget_read is None else _opening(budget_read, None)
            return self._acquire(request, lease_id, opening, riders, None)
        if budget_read is None:
            with self._turns.turn(request.tenant_id, request.broker_account_id) as turn:
                return self._acquire(request, lease_id, None, riders, turn)
        work = _QueuedAcquire(self, request, lease_id, budget_read, riders)
        with self._turns.turn(request.tenant_id, request.broker_account_id, work) as turn:
            if turn.claimed:
                self.carry_line(turn, work)
            if work.answer is not None:
                if not turn.claimed:
                    turn.hand_over(turn.handed)  # the writer that carried it handed this on
                _log_acquired(request, work.answer.handle_record, took_over=False, refused=None)
                return work.answer.acquired
            return self._acquire(request, lease_id, _opening(budget_read, turn), riders, turn)

    def carry_line(self, turn: Turn, own: Queued) -> None:
        """Carry out the work waiting in line, acquires and releases, with this writer's own:
        each decided in order on the state the ones before it leave, all written by one batch
        that writes the account's state once; settle each piece carried (`account_turns`).

        Every piece has a precondition of its own (a reservation's `create`, a release's fence
        on the version its lease wrote) and the state's `update_time` one more, so the batch
        lands or fails as a whole. Where it fails, whatever the reason (a race, a redelivery or
        a fenced release among them, a refused rider, an answer lost after it may have landed),
        every writer, this one included, does its own work alone, as if no line had formed:
        each learns from its own preconditions what a batch whose answer was lost did, as the
        single writer does after its own. What cannot ride (an acquire that waits or is refused,
        a malformed limit, a second write of one document, a release whose effect on the state
        is not known) is left to its writer.
        """
        line = [
            work
            for work in turn.claimed
            if isinstance(work, _QueuedAcquire | _QueuedRelease) and work.owner is self
        ][:MAX_CARRIED]
        if len(line) < 2:
            return
        base = self._line_base(turn, own)
        if base is None:
            return
        now = self._clock()
        pieces = self._plan_line(line, base, now)
        if len(pieces) < 2:
            return
        landed = self._commit_line(pieces, base, now, _account_of(own))
        if landed is None:
            turn.handed = None  # what the batch decided on may be out of date: each writer reads
            return
        results, state_written = landed
        for piece, result in zip(pieces, results, strict=True):
            piece.landed(result)
        # What this writer does next (its own work, where it did not ride) decides on it.
        turn.handed = KnownState(base.reference, pieces[-1].after, state_written.update_time)
        turn.hand_over(turn.handed)

    def _line_base(self, turn: Turn, own: Queued) -> KnownState | None:
        """The state a line is decided on: an acquiring writer's opening read or the state handed
        over, whichever is newer; else the state handed over; else read once for all in line.
        None where it cannot be parsed (each writer meets that alone, as a named wait)."""
        try:
            if isinstance(own, _QueuedAcquire):
                opening = _opening(own.budget_read, turn)
                if opening is not None:
                    return opening.known
            if turn.handed is not None:
                return turn.handed
            ref = inflight_ref(self._db, *_account_of(own))
            with store_errors("account state read"):
                return _known_from(ref.get(**self._policy.kwargs()))
        except MalformedDocumentError:
            return None

    def _plan_line(
        self, line: list[_QueuedAcquire | _QueuedRelease], base: KnownState, now: datetime
    ) -> list[_Piece]:
        """The pieces of `line` that ride, in order, each planned on the state the ones before
        it leave; a document is written at most once (a second piece on it is left alone)."""
        pieces: list[_Piece] = []
        documents: set[str] = set()
        known = base
        for work in line:
            if isinstance(work, _QueuedAcquire):
                piece = self._plan_acquire(work, known, now)
            else:
                piece = work.handle.plan_end(work, known, now)
            if piece is None or piece.document in documents:
                continue
            documents.add(piece.document)
            pieces.append(piece)
            # While the pieces add up, the precondition stays the base's `update_time`.
            known = KnownState(base.reference, piece.after, base.update_time)
        return pieces

    def _plan_acquire(
        self, work: _QueuedAcquire, known: KnownState, now: datetime
    ) -> _Piece | None:
        """A fresh intent's acquire as a piece of a line: None unless it fits every limit."""
        request = work.request
        read = _AcquireRead(None, work.budget_read.account, known)
        try:
            admission = self._admission(request, read, now, work.lease_id)
        except (LimitWaitError, InvalidIntentError):
            return None
        if not isinstance(admission, Admitted):
            return None
        record = new_record(
            request,
            previous=None,
            lease_id=work.lease_id,
            now=now,
            ttl=self._ttl,
            counts_against_budget=True,
        )
        res_doc = reservation_ref(self._db, request.tenant_id, request.client_intent_id)

        def stage(batch: firestore.WriteBatch) -> None:
            lean_writes.create(batch, res_doc, record_to_document(record))

        def landed(result: Any) -> None:
            handle = self._handle(record, result.update_time, work.riders, read)
            work.answer = _Carried(Acquired(handle), record)
            work.settle(carried=True)

        after = _after_admission(read, admission, known.update_time).state
        return _Piece(res_doc.path, stage, None, after, landed)

    def _commit_line(
        self, pieces: list[_Piece], base: KnownState, now: datetime, account: tuple[str, str]
    ) -> tuple[list[Any], Any] | None:
        """Write every piece, their riders and the state the last one leaves, in one batch under
        the precondition on `base`: the pieces' write results and the state's, or None."""
        batch = self._db.batch()
        for piece in pieces:
            piece.stage(batch)
        for piece in pieces:
            if piece.riders is not None:
                piece.riders.add_to(batch)
        last = pieces[-1].after
        tenant_id, broker_account_id = account
        stage_admission(
            batch,
            base,
            Admitted(last.leases, last.placed_orders),
            now=now,
            tenant_id=tenant_id,
            broker_account_id=broker_account_id,
            positions=last.positions if last.positions != base.state.positions else None,
        )
        try:
            with store_errors("line commit"):
                results = list(batch.commit(**self._policy.kwargs()))
        except (StoreUnavailableError, gexc.GoogleAPICallError) as exc:
            emit(
                logger,
                "exec.reservation.line_alone",
                logging.DEBUG,
                tenant_id=tenant_id,
                broker_account_id=broker_account_id,
                pieces=len(pieces),
                error=type(exc).__name__,
            )
            return None
        return results[: len(pieces)], results[-1]

    def _acquire(
        self,
        request: ReservationRequest,
        lease_id: str,
        opening: _AcquireRead | None,
        riders: StagedWrites | None,
        turn: Turn | None,
    ) -> Acquisition:
        """Attempt until an answer, a bounded number of times; see `acquire`."""
        # The optimistic create decides on the opening read, once: it is not a race lost, so it
        # takes no attempt of the budget and no pause. Where it found the intent's document, the
        # same attempt reads that document alone and answers a duplicate from it; anything else
        # goes on to the attempts that read all three, as many as before.
        optimistic = iter([] if opening is None else [opening])

        def attempt(_: int) -> Acquisition | Retry:
            read = next(optimistic, None) or self._read(request)
            answer = self._attempt(request, read, lease_id, riders, turn)
            if isinstance(answer, _FoundExisting):
                found = self._read_reservation(request, read)
                return self._attempt(request, found, lease_id, riders, turn)
            return answer

        attempts = Attempts[Acquisition](
            limit=self._max_attempts + (opening is not None),
            pause=self._pause,
            exhausted=lambda: ReservationContentionError(
                f"reservation of {request.client_intent_id!r} lost {self._max_attempts} "
                "optimistic commits to concurrent writers; the delivery will be retried"
            ),
        )
        return attempts.until_answer(attempt)

    def _read(self, request: ReservationRequest) -> _AcquireRead:
        """The reservation, the account and its state, in one round trip."""
        res_doc = reservation_ref(self._db, request.tenant_id, request.client_intent_id)
        acc_doc, state_doc = budget_refs(self._db, request.tenant_id, request.broker_account_id)
        with store_errors("reservation read"):
            snapshots = {
                snap.reference.path: snap
                for snap in self._db.get_all([res_doc, acc_doc, state_doc], **self._policy.kwargs())
            }
        return _AcquireRead(
            snapshots[res_doc.path], snapshots[acc_doc.path], snapshots[state_doc.path]
        )

    def _read_reservation(self, request: ReservationRequest, opening: _AcquireRead) -> _AcquireRead:
        """The intent's reservation alone, beside the opening read's account and state (which
        only a duplicate's answer may use: anything else reads all three)."""
        res_doc = reservation_ref(self._db, request.tenant_id, request.client_intent_id)
        with store_errors("reservation read"):
            snap = res_doc.get(**self._policy.kwargs())
        return _AcquireRead(snap, opening.account, opening.state, reservation_only=True)

    def _attempt(
        self,
        request: ReservationRequest,
        read: _AcquireRead,
        lease_id: str,
        riders: StagedWrites | None,
        turn: Turn | None = None,
    ) -> Acquisition | Retry:
        """Decide on `read` and commit once: the answer, or `Retry` where a race was lost.

        Holding `turn`, hand the account's state on as this attempt leaves it (`account_turns`).
        """
        existing: ReservationRecord | None = None
        version: Any = None  # the update time the batch's precondition holds the document to
        if read.reservation is not None and read.reservation.exists:
            existing = record_from_document(read.reservation.to_dict() or {})
            version = read.reservation.update_time
        if read.reservation_only and (existing is None or existing.lease_id == lease_id):
            return Retry(pause=False)  # not a duplicate: decide on a read of all three
        if existing is not None and existing.lease_id == lease_id:
            # An earlier commit of ours landed although its answer was lost.
            return Acquired(self._handle(existing, version, riders, read))
        now = self._clock()
        if decide_acquire(existing, request, now) is AcquireAction.DUPLICATE:
            assert existing is not None
            return AlreadyExecuted(existing)
        if read.reservation_only:
            return Retry(pause=False)  # a take-over decides on a current account state
        try:
            admission = self._admission(request, read, now, lease_id)
        except LimitWaitError as exc:
            if read.reservation is None:
                return Retry(pause=False)  # unread: a duplicate needs no limit; read it first
            if turn is not None and not isinstance(exc.__cause__, MalformedDocumentError):
                turn.hand_over(read.known)  # unchanged: the next in line need not read it
            raise
        record = new_record(
            request,
            previous=existing,
            lease_id=lease_id,
            now=now,
            ttl=self._ttl,
            counts_against_budget=isinstance(admission, Admitted),
        )
        batch = self._db.batch()
        res_doc = reservation_ref(self._db, request.tenant_id, request.client_intent_id)
        if existing is None:
            lean_writes.create(batch, res_doc, record_to_document(record))
        else:
            option = self._db.write_option(last_update_time=version)
            lean_writes.update(batch, res_doc, record_to_document(record), option=option)
        if isinstance(admission, Admitted):
            stage_admission(
                batch,
                read.known,
                admission,
                now=now,
                tenant_id=request.tenant_id,
                broker_account_id=request.broker_account_id,
            )
        results = self._commit(batch, request, read)
        if isinstance(results, gexc.AlreadyExists) and read.reservation is None:
            return _FoundExisting(pause=False)
        if not isinstance(results, list):
            return Retry(pause=read.reservation is not None)
        if turn is not None:
            # The batch writes the reservation, then the state document.
            turn.hand_over(
                _after_admission(read, admission, results[1].update_time)
                if isinstance(admission, Admitted)
                else None
            )
        refused = admission.reason if isinstance(admission, Refused) else None
        _log_acquired(request, record, took_over=existing is not None, refused=refused)
        return Acquired(self._handle(record, results[0].update_time, riders, read), refused)

    def _admission(
        self, request: ReservationRequest, read: _AcquireRead, now: datetime, lease_id: str
    ) -> Admitted | Refused | None:
        """The account's limits applied to this lease; None where none is counted.

        Raises `LimitWaitError` where the lease must wait for intents in flight to end.
        """
        if not request.enforce_budget:
            return None
        limits = limits_from_account(read.account.to_dict() if read.account.exists else None)
        if limits is None:
            # Malformed limits are not guessed at: the risk stage rejects the intent
            # (`risk_data_unavailable`), or lets it through where risk is configured fail-open.
            emit(
                logger,
                "exec.reservation.limits_unreadable",
                logging.WARNING,
                tenant_id=request.tenant_id,
                broker_account_id=request.broker_account_id,
                client_intent_id=request.client_intent_id,
            )
        unlimited = limits is None or not limits.any()
        if unlimited and not holds_no_position(read.state, request.symbol):
            return None
        try:
            known = read.known
        except MalformedDocumentError as exc:
            if unlimited:
                return None  # no limit to decide; its room is decided once it is repaired
            raise _unreadable_state(request, exc) from exc
        # A limit to decide, or a symbol whose position the document does not hold yet: its
        # placed order would add an entry, so it holds the room first (`execution.account_state`,
        # "Size"), on an account without limits too.
        lease = Lease(
            client_intent_id=request.client_intent_id,
            amount_usd=request.amount_usd,
            expires_at=now + self._ttl,
            symbol=request.symbol,
            side=request.side,
            qty=request.qty,
        )
        counted = limits or AccountLimits()
        return admit(known.state, now=now, lease_id=lease_id, lease=lease, limits=counted)

    def _commit(
        self, batch: firestore.WriteBatch, request: ReservationRequest, read: _AcquireRead
    ) -> list[Any] | BaseException:
        """The batch's write results, or the error of a precondition that lost its race."""
        try:
            with store_errors("reservation commit"):
                return list(batch.commit(**self._policy.kwargs()))
        except RACE_ERRORS as exc:
            emit(
                logger,
                "exec.reservation.contended",
                logging.DEBUG,
                client_intent_id=request.client_intent_id,
                error=type(exc).__name__,
                read_first=read.reservation is not None,
            )
            return exc

    def _handle(
        self,
        record: ReservationRecord,
        version: Any,
        riders: StagedWrites | None,
        read: _AcquireRead | None = None,
    ) -> FirestoreReservationHandle:
        return FirestoreReservationHandle(
            self._db,
            record,
            version=version,
            riders=riders,
            clock=self._clock,
            policy=self._policy,
            retention=self._retention,
            max_attempts=self._max_attempts,
            pause=self._pause,
            turns=self._turns,
            order_days=_order_days(read),
            clock_skew=self._clock_skew,
            line=self,
            admitted_under=_limits_read(read),
        )

    def _pause(self, attempt: int) -> None:
        jitter_sleep(
            attempt, sleep=self._sleep or time.sleep, uniform=self._uniform or random.uniform
        )


def _order_days(read: _AcquireRead | None) -> tuple[str, ...]:
    """The days the account state's `placed_orders` held when acquire read (or was handed) it."""
    if read is None:
        return ()
    if isinstance(read.state, KnownState):
        return tuple(read.state.state.placed_orders)
    return order_days_in(read.state)


def _limits_read(read: _AcquireRead | None) -> AdmittedUnder | None:
    """The account limits `read` held: what the admission of its acquire decided on."""
    if read is None:
        return None
    return AdmittedUnder(limits_from_account(snapshot_data(read.account)))


@dataclass(frozen=True)
class AdmittedUnder:
    """The counting limits an acquire admitted its lease under (None: the account document was
    malformed, so none were counted). The invocation compares them with the account it decides
    its gates on (`execution.firestore.invocation`): a lease admitted under limits that are no
    longer the account's must not reach the broker."""

    limits: AccountLimits | None


def _unreadable_state(request: ReservationRequest, exc: MalformedDocumentError) -> LimitWaitError:
    """No limit can be decided on a state document nobody can read (an operator's edit): the
    intent waits, nothing written, until the document is repaired or the intent turns stale.
    A named wait and an ERROR event, where the bare parse error was a crash on every delivery."""
    emit(
        logger,
        "exec.limits.state_unreadable",
        logging.ERROR,
        tenant_id=request.tenant_id,
        broker_account_id=request.broker_account_id,
        client_intent_id=request.client_intent_id,
        problem=str(exc),
    )
    return LimitWaitError(f"account_state_unreadable: {exc}; waiting until it is repaired")


def _log_acquired(
    request: ReservationRequest, record: ReservationRecord, *, took_over: bool, refused: str | None
) -> None:
    emit(
        logger,
        "exec.reservation.acquired",
        tenant_id=request.tenant_id,
        broker_account_id=request.broker_account_id,
        client_intent_id=request.client_intent_id,
        lease_id=record.lease_id,
        attempt=record.attempt,
        took_over=took_over,
        amount_usd=request.amount_usd,
        counted=record.counts_against_budget,
        refused=refused,
    )


class FirestoreReservationHandle:
    """One held lease; `release` is idempotent and fenced by `lease_id`."""

    def __init__(
        self,
        db: firestore.Client,
        record: ReservationRecord,
        *,
        version: Any,
        riders: StagedWrites | None = None,
        clock: Clock,
        policy: CallPolicy,
        retention: timedelta,
        max_attempts: int,
        pause: Callable[[int], None],
        turns: AccountTurns | None = None,
        order_days: tuple[str, ...] = (),
        clock_skew: timedelta = timedelta(seconds=DEFAULT_CLOCK_SKEW_SECONDS),
        line: FirestoreReservationManager | None = None,
        admitted_under: AdmittedUnder | None = None,
    ) -> None:
        """`admitted_under`: the account limits the acquire decided this lease on (None: not
        known). `order_days`: the days the account state's `placed_orders` held when acquire read it
        (a placed release prunes the past ones). `clock_skew`: how far other instances' clocks
        may be from ours (a placed order counts on each UTC day they may show). `line`: the
        manager whose writers may carry this release out with theirs while it waits for its turn
        (`carry_line`)."""
        self._clock_skew = clock_skew
        self._db = db
        self._record = record
        # The update time of the document as this lease wrote it: while it still matches, the
        # document is ours unchanged and release needs no read.
        self._version = version
        # Best-effort writes of the invocation (its ledger entry) that ride on the release batch.
        self._riders = riders
        self._clock = clock
        self._policy = policy
        self._retention = retention
        self._max_attempts = max_attempts
        self._pause = pause
        self._turns = turns
        self._order_days = order_days
        self._line = line
        self.admitted_under = admitted_under
        self._released: ReleaseResult | None = None

    @property
    def lease_id(self) -> str:
        return self._record.lease_id

    @property
    def attempt(self) -> int:
        return self._record.attempt

    @property
    def client_order_id(self) -> str:
        return self._record.client_order_id

    @property
    def expires_at(self) -> datetime:
        return self._record.expires_at

    def release(
        self,
        outcome: Outcome,
        *,
        error: str | None = None,
        broker_order_id: str | None = None,
        fate_unknown: bool = False,
    ) -> ReleaseResult:
        """Record `outcome` and end the lease, if the document still carries it.

        Raises `StoreUnavailableError`, `ReservationContentionError` or what the store raised:
        the engine contains every raise (`ExecutionEngine._release`); a later call tries again.
        """
        if self._released is None:
            ending = _Ending(outcome, error, broker_order_id, fate_unknown)
            work = _QueuedRelease(self._line, self, ending)
            with self._turn(work) as turn:
                if turn is not None and turn.claimed and self._line is not None:
                    self._line.carry_line(turn, work)
                if work.carried_at is not None:
                    self._log_released(ending, work.carried_at, work.kept)
                    self._released = ReleaseResult.RECORDED
                else:
                    handed = turn.handed if turn is not None else None
                    self._released = self._release(
                        ending,
                        _Known(self._version, self._record.counted_lease_id, self._riders, handed),
                        turn,
                    )
        return self._released

    def _turn(self, work: _QueuedRelease) -> AbstractContextManager[Turn | None]:
        """A release that ends or keeps a hold changes the account's state document: it waits
        its turn behind the acquires that read that document (`account_turns`), in line with
        `work`, which the writer whose turn comes may carry out with its own."""
        if self._turns is None or self._record.counted_lease_id is None:
            return nullcontext()
        queued = work if self._line is not None else None
        return self._turns.turn(self._record.tenant_id, self._record.broker_account_id, queued)

    def plan_end(self, work: _QueuedRelease, known: KnownState, now: datetime) -> _Piece | None:
        """This release as a piece of a line decided on `known` (`carry_line`): its record's
        end fenced by the version its lease wrote, and the state it leaves; None where it cannot
        ride (its record's version or its effect on the state is not known, the state is stale)."""
        if self._version is None or self._released is not None:
            return None  # its version unknown, it must read its record first: alone
        if not known.exists:
            return None  # a counted hold lives in a document that exists: `known` is stale
        ending = work.ending
        end = state_after_end(
            known.state,
            self._record,
            ending.outcome,
            now,
            counted_lease_id=self._record.counted_lease_id,
            fate_unknown=ending.fate_unknown,
            clock_skew=self._clock_skew,
        )
        if end is None or end.state is None:
            return None
        after, kept = end.state, end.kept
        fence = self._db.write_option(last_update_time=self._version)

        def stage(batch: firestore.WriteBatch) -> None:
            self._stage_record_end(batch, ending, kept, now, fence)

        def landed(_: Any) -> None:
            if self._riders is not None:
                self._riders.committed()
            work.carried_at, work.kept = now, kept
            work.settle(carried=True)

        return _Piece(self._doc().path, stage, self._riders, after, landed)

    def _release(self, ending: _Ending, known: _Known, turn: Turn | None) -> ReleaseResult:
        """Attempt until an answer, a bounded number of times; see `release`."""
        attempts = Attempts[ReleaseResult](
            limit=self._max_attempts,
            pause=self._pause,
            exhausted=lambda: ReservationContentionError(
                f"release of {self._record.client_intent_id!r} kept losing races"
            ),
        )
        return attempts.until_answer(lambda _: self._release_once(ending, known, turn))

    def _release_once(
        self, ending: _Ending, known: _Known, turn: Turn | None
    ) -> ReleaseResult | Retry:
        """Read (where the version is unknown), decide, build the batch, commit once; holding
        `turn`, hand the account's state on as the batch left it (`account_turns`)."""
        if known.version is None:
            current, version = self._read_current()
            if current is None or current.lease_id != self._record.lease_id:
                self._log_fenced(ending, current)
                return ReleaseResult.FENCED
            if current.status is ReservationStatus.RELEASED:
                if ending.written_on(current):
                    return ReleaseResult.RECORDED  # an earlier commit of ours, its answer lost
                # Another writer ended the record under our lease (the reconciler's verdict of
                # `stale` while this attempt was paused in its broker call): not our release.
                self._log_fenced(ending, current)
                return ReleaseResult.FENCED
            # `reserved`, or `expired` by the sweeper while this lease still held it: the
            # outcome we know beats the sweeper's guess, and no newer attempt exists.
            known.version, known.counted = version, current.counted_lease_id
        now = self._clock()
        batch = self._db.batch()
        fence = self._db.write_option(last_update_time=known.version)
        staged = self._stage_end(batch, ending, known, now, fence)
        results = self._commit_end(batch, known)
        if isinstance(results, Retry):
            return results
        if turn is not None:
            turn.hand_over(_after_end(known.state, staged, results))
        self._log_released(ending, now, staged.kept)
        return ReleaseResult.RECORDED

    def _doc(self) -> firestore.DocumentReference:
        return reservation_ref(self._db, self._record.tenant_id, self._record.client_intent_id)

    def _read_current(self) -> tuple[ReservationRecord | None, Any]:
        """The document as it is now (None where it is gone), and its update time."""
        with store_errors("reservation release read"):
            snap = self._doc().get(**self._policy.kwargs())
        if not snap.exists:
            return None, None
        return record_from_document(snap.to_dict() or {}), snap.update_time

    def _log_fenced(self, ending: _Ending, current: ReservationRecord | None) -> None:
        emit(
            logger,
            "exec.reservation.release_fenced",
            logging.WARNING,
            tenant_id=self._record.tenant_id,
            client_intent_id=self._record.client_intent_id,
            lease_id=self._record.lease_id,
            current_lease_id=current.lease_id if current else None,
            outcome=ending.outcome.value,
        )

    def _stage_end(
        self,
        batch: firestore.WriteBatch,
        ending: _Ending,
        known: _Known,
        now: datetime,
        fence: Any,
    ) -> StagedEnd:
        """Stage the account state's end (or kept hold) and the reservation's end under `fence`
        (the precondition on the version we know)."""
        staged = stage_attempt_end(
            batch,
            self._db,
            self._record,
            ending.outcome,
            now,
            counted_lease_id=known.counted,
            fate_unknown=ending.fate_unknown,
            known=known.state,
            order_days=self._order_days,
            clock_skew=self._clock_skew,
        )
        self._stage_record_end(batch, ending, staged.kept, now, fence)
        return staged

    def _stage_record_end(
        self,
        batch: firestore.WriteBatch,
        ending: _Ending,
        kept: str | None,
        now: datetime,
        fence: Any,
    ) -> None:
        """Stage the reservation's end under `fence`, keeping the hold `kept` (or none)."""
        ended = ended_fields(
            ReservationStatus.RELEASED,
            ending.outcome,
            error=ending.error,
            released_at=now,
            purge_at=now + self._retention,
        )
        lean_writes.update(
            batch,
            self._doc(),
            {**ended, "broker_order_id": ending.broker_order_id, "counted_lease_id": kept},
            option=fence,
        )

    def _commit_end(self, batch: firestore.WriteBatch, known: _Known) -> list[Any] | Retry:
        """Commit with the riders: the write results where it landed, `Retry` where it must be
        built again."""
        if known.riders is not None:
            known.riders.add_to(batch)
        try:
            with store_errors("reservation release"):
                results = list(batch.commit(**self._policy.kwargs()))
        except RACE_ERRORS:
            if known.state is not None:
                # The handed-over state is the likelier to have changed (another instance wrote
                # the account): once more without it, before reading the reservation.
                known.state = None
                return Retry(pause=False)
            # Changed since we knew it (a sweep, a take-over, our own landed retry): read it. A
            # race against the version acquire wrote is not worth a pause: the read settles it.
            pause = known.version is not self._version
            known.version = None
            return Retry(pause=pause)
        except gexc.GoogleAPICallError as exc:
            if known.riders is None:
                raise
            # The store refused the batch (an invalid ledger id, say): a best-effort rider must
            # never cost the release. Release alone; `flush` tries the riders again.
            emit(
                logger,
                "exec.reservation.riders_refused",
                logging.WARNING,
                client_intent_id=self._record.client_intent_id,
                lease_id=self._record.lease_id,
                error=repr(exc),
            )
            known.riders = None
            return Retry(pause=False)
        if known.riders is not None:
            known.riders.committed()
        return results

    def _log_released(self, ending: _Ending, now: datetime, kept: str | None) -> None:
        rec = self._record
        emit(
            logger,
            "exec.reservation.released",
            tenant_id=rec.tenant_id,
            broker_account_id=rec.broker_account_id,
            client_intent_id=rec.client_intent_id,
            lease_id=rec.lease_id,
            attempt=rec.attempt,
            outcome=ending.outcome.value,
            held_seconds=round((now - rec.created_at).total_seconds(), 3),
        )
        if kept is not None:
            log_kept_hold(rec, kept, ending.outcome)


@dataclass(frozen=True)
class _Ending:
    """What one release records."""

    outcome: Outcome
    error: str | None
    broker_order_id: str | None
    fate_unknown: bool

    def written_on(self, record: ReservationRecord) -> bool:
        """True where `record` says what this release writes: its own commit landed."""
        return (record.outcome, record.broker_order_id) == (self.outcome, self.broker_order_id)


@dataclass
class _Known:
    """What a release knows of the document between its attempts: the version its precondition
    holds the document to (None: read it first), the hold that counts the intent, the riders
    still to carry (dropped once the store refused them), and the account's state as the writer
    before in line handed it over (dropped once a commit under it failed)."""

    version: Any
    counted: str | None
    riders: StagedWrites | None
    state: KnownState | None = None


def _after_end(
    before: KnownState | None, staged: StagedEnd, results: list[Any]
) -> KnownState | None:
    """The account's state as a release's landed batch left it; None where it is not known."""
    if before is None or staged.state is None:
        return None
    if not staged.writes_state:
        return before
    # `stage_attempt_end` stages the state document's write first in the batch.
    return KnownState(before.reference, staged.state, results[0].update_time)


def _opening(budget_read: BudgetRead, turn: Turn | None) -> _AcquireRead | None:
    """What the first attempt decides on without reading the reservation: the opening read, or
    the state the writer before in line handed over where it is newer; None where a read must
    come first (this writer waited, and the writer before it handed nothing over)."""
    handed = turn.handed if turn is not None else None
    read = budget_read.inflight
    if handed is None:
        if turn is not None and turn.waited:
            return None  # a writer that went first changed the state document since the read
        return _AcquireRead(None, budget_read.account, read)
    if read.exists and (not handed.exists or read.update_time > handed.update_time):
        return _AcquireRead(None, budget_read.account, read)
    return _AcquireRead(None, budget_read.account, handed)


def _after_admission(read: _AcquireRead, admission: Admitted, update_time: Any) -> KnownState:
    """The account's state once `admission` is written over what `read` decided on, as of
    `update_time` (the commit's, or the read's while the admissions of one batch add up)."""
    before = read.known
    positions = before.state.positions if admission.positions is None else admission.positions
    after = AccountState(
        leases=dict(admission.leases),
        positions=dict(positions),
        placed_orders=dict(admission.placed_orders),
    )
    return KnownState(before.reference, after, update_time)


class _FoundExisting(Retry):
    """The optimistic create found the intent's document: read it, alone, in the same attempt."""


@dataclass(frozen=True)
class _Carried:
    """An acquire another writer carried out: the answer, and the record (its writer logs it)."""

    acquired: Acquired
    handle_record: ReservationRecord


class _QueuedAcquire(Queued):
    """A fresh intent's acquire, waiting in line with its opening read (`carry_line`)."""

    def __init__(
        self,
        owner: FirestoreReservationManager,
        request: ReservationRequest,
        lease_id: str,
        budget_read: BudgetRead,
        riders: StagedWrites | None,
    ) -> None:
        super().__init__()
        self.owner = owner
        self.request = request
        self.lease_id = lease_id
        self.budget_read = budget_read
        self.riders = riders
        self.answer: _Carried | None = None


class _QueuedRelease(Queued):
    """A counted lease's release, waiting in line (`carry_line`): once carried, when its end
    was recorded and the hold its record keeps."""

    def __init__(
        self,
        owner: FirestoreReservationManager | None,
        handle: FirestoreReservationHandle,
        ending: _Ending,
    ) -> None:
        super().__init__()
        self.owner = owner
        self.handle = handle
        self.ending = ending
        self.carried_at: datetime | None = None
        self.kept: str | None = None


@dataclass(frozen=True)
class _Piece:
    """One writer's work planned into a line's batch: the document it writes, how to stage that
    write, the riders that go with it, the account state it leaves, and what to do once the
    batch landed (given the write's result)."""

    document: str
    stage: Callable[[firestore.WriteBatch], None]
    riders: StagedWrites | None
    after: AccountState
    landed: Callable[[Any], None]


def _account_of(work: Queued) -> tuple[str, str]:
    """The tenant and account whose line `work` waits in."""
    if isinstance(work, _QueuedAcquire):
        return work.request.tenant_id, work.request.broker_account_id
    assert isinstance(work, _QueuedRelease)
    record = work.handle._record
    return record.tenant_id, record.broker_account_id


def _known_from(snap: Snapshot) -> KnownState:
    """An account state's snapshot, parsed (raises `MalformedDocumentError`)."""
    return KnownState(
        snap.reference,
        state_from_document(snapshot_data(snap)),
        snap.update_time if snap.exists else None,
    )


def _writes_account_state(request: ReservationRequest, budget_read: BudgetRead | None) -> bool:
    """Whether this acquire may write the account's state document (a limit is set, or the
    intent's symbol has no exact position there yet; unknown until read where no opening read
    was passed)."""
    if not request.enforce_budget:
        return False
    if budget_read is None:
        return True
    limits = limits_from_account(snapshot_data(budget_read.account))
    return (limits is not None and limits.any()) or holds_no_position(
        budget_read.inflight, request.symbol
    )


def _new_lease_id() -> str:
    return uuid.uuid4().hex


def _check_read_is_of(read: BudgetRead, request: ReservationRequest) -> None:
    """Refuse a read of another account's documents: the acquire would decide and write on them."""
    expected = (
        account_path(request.tenant_id, request.broker_account_id),
        inflight_path(request.tenant_id, request.broker_account_id),
    )
    found = (read.account.reference.path, read.inflight.reference.path)
    if found != expected:
        raise ValueError(f"budget_read holds {found}, not the documents of {expected[0]}")
