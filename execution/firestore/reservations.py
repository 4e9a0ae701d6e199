"""`FirestoreReservationManager`: the reservation state machine on Firestore, without transactions.

Each acquire is one read (`get_all` of the reservation, the account and its in-flight document)
and one atomic batch guarded by preconditions: `create` where the document was absent, an update
conditioned on the `update_time` we read where it existed. A lost race fails the whole batch with
`AlreadyExists`/`FailedPrecondition`; we read again after a jittered pause, a bounded number of
times (`support.Attempts`: the one loop of acquire and release, each attempt a read, a decision,
a batch and a commit). An invocation that read the account and in-flight documents at its start
passes them as `budget_read`: the first attempt then creates the reservation without reading it,
since a fresh intent's document does not exist yet; where it does (a redelivery, a duplicate),
the `create` fails with `AlreadyExists` and the next attempt reads the reservation alone, deciding
with the opening read's account: a duplicate needs nothing more. A take-over on an account that
counts a limit, a lost precondition on its state, or a state created meanwhile reads all three
again, at once, since a limit is decided on the state as it is now. The emulator's pessimistic
transactions livelock under exactly the contention this handles (docs/EMULATOR-FACTS.md, F1);
preconditions never hold a lock, so contention is cheap and always ends. The batches' writes
are encoded by `execution.firestore.lean_writes` (the library's own `Write` messages, cheaper).

Within one process the writers of one limited account's state document take turns
(`execution.firestore.account_turns`): an acquire holds the account's turn from its read to its
commit, a counted lease's release for its commit. Without them the invocations of one instance
on one hot account read the same version and all but one lose every round (a 64-intent burst
answered `ReservationContentionError` to a quarter of its intents); with them a read is current
when its commit lands, and an acquire that waited for its turn drops its opening read, which a
writer before it made stale. The preconditions still decide every race, between instances too.

The same batch writes the account's state document where the account sets a counting limit
(`max_inflight_usd`, `max_daily_orders`, `max_position_qty`), so every such limit is decided
against what the commit's precondition proves current (`execution.account_state`). A release of
`placed` moves the lease into the account's position and daily count in its own batch
(`execution.firestore.account_state.add_placed_order`).

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
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from execution.account_state import Admitted, Lease, Refused, admit
from execution.clock import Clock
from execution.documents import ended_fields, reservation_from_document, reservation_to_document
from execution.errors import LimitWaitError, ReservationContentionError
from execution.firestore import lean_writes
from execution.firestore.account_state import (
    limits_from_account,
    log_kept_hold,
    order_days_in,
    stage_admission,
    stage_attempt_end,
    state_from_document,
)
from execution.firestore.account_turns import DEFAULT_TIMEOUT_SECONDS, AccountTurns
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
    `state_current` False where the account and its state are the opening read's, older than
    the reservation's read."""

    reservation: Snapshot | None
    account: Snapshot
    state: Snapshot
    state_current: bool = True


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
    ) -> None:
        """`sleep`, `lease_ids` and `uniform` (the jitter's randomness) default to the system's;
        a simulation injects its own so that a seed decides them. `turns` orders this process's
        writers of one account's state document (`execution.firestore.account_turns`)."""
        self._db = db
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
            return self._acquire(request, lease_id, budget_read, riders)
        with self._turns.turn(request.tenant_id, request.broker_account_id) as waited:
            # A writer that went first changed the state document since the opening read.
            return self._acquire(request, lease_id, None if waited else budget_read, riders)

    def _acquire(
        self,
        request: ReservationRequest,
        lease_id: str,
        budget_read: BudgetRead | None,
        riders: StagedWrites | None,
    ) -> Acquisition:
        """Attempt until an answer, a bounded number of times; see `acquire`."""
        # The optimistic create decides on the opening read, once. Where it fails (the intent
        # has a record: a redelivery, a duplicate), the reservation alone is read next, with the
        # opening read for the rest: a duplicate needs nothing else (3 documents read, not 5).
        # Neither is a race lost, so they take no attempt of the budget and no pause.
        first_reads: list[Callable[[], _AcquireRead]] = []
        if budget_read is not None:
            opening = budget_read
            first_reads = [
                lambda: _AcquireRead(None, opening.account, opening.inflight),
                lambda: self._read_record(request, opening),
            ]
        free_attempts = len(first_reads)

        def attempt(_: int) -> Acquisition | Retry:
            read = first_reads.pop(0)() if first_reads else self._read(request)
            answer = self._attempt(request, read, lease_id, riders)
            if isinstance(answer, _ReadAll):
                first_reads.clear()
            return answer

        attempts = Attempts[Acquisition](
            limit=self._max_attempts + free_attempts,
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

    def _read_record(self, request: ReservationRequest, opening: BudgetRead) -> _AcquireRead:
        """The reservation alone, with the opening read's account and state."""
        with store_errors("reservation read"):
            snapshot = reservation_ref(self._db, request.tenant_id, request.client_intent_id).get(
                **self._policy.kwargs()
            )
        return _AcquireRead(snapshot, opening.account, opening.inflight, state_current=False)

    def _attempt(
        self,
        request: ReservationRequest,
        read: _AcquireRead,
        lease_id: str,
        riders: StagedWrites | None,
    ) -> Acquisition | Retry:
        """Decide on `read` and commit once: the answer, or `Retry` where a race was lost."""
        existing: ReservationRecord | None = None
        version: Any = None  # the update time the batch's precondition holds the document to
        if read.reservation is not None and read.reservation.exists:
            existing = record_from_document(read.reservation.to_dict() or {})
            version = read.reservation.update_time
        if existing is not None and existing.lease_id == lease_id:
            # An earlier commit of ours landed although its answer was lost.
            return Acquired(self._handle(existing, version, riders, read))
        now = self._clock()
        if decide_acquire(existing, request, now) is AcquireAction.DUPLICATE:
            assert existing is not None
            return AlreadyExecuted(existing)
        if not read.state_current and _writes_account_state(
            request, BudgetRead(read.account, read.state)
        ):
            return _ReadAll()  # a limit is decided on the state as it is now: read it
        try:
            admission = self._admission(request, read, now, lease_id)
        except LimitWaitError:
            if read.reservation is None:
                return _ReadAll()  # unread: a duplicate needs no limit; read it first
            raise
        record = new_record(
            request,
            previous=existing,
            lease_id=lease_id,
            now=now,
            ttl=self._ttl,
            counts_against_budget=isinstance(admission, Admitted),
        )
        batch = self._acquire_batch(record, read, version=version, admission=admission, now=now)
        written = self._commit(batch, request, read)
        if isinstance(written, Exception):
            if read.reservation is None and not _lost_to_the_record(written, admission, read):
                return _ReadAll()
            return Retry(pause=read.reservation is not None)
        refused = admission.reason if isinstance(admission, Refused) else None
        _log_acquired(request, record, took_over=existing is not None, refused=refused)
        return Acquired(self._handle(record, written, riders, read), refused)

    def _acquire_batch(
        self,
        record: ReservationRecord,
        read: _AcquireRead,
        *,
        version: Any,
        admission: Admitted | Refused | None,
        now: datetime,
    ) -> firestore.WriteBatch:
        """The reservation's create (or, where it exists, its update held to `version`) and the
        admitted account state, in one batch."""
        batch = self._db.batch()
        res_doc = reservation_ref(self._db, record.tenant_id, record.client_intent_id)
        if version is None:
            lean_writes.create(batch, res_doc, record_to_document(record))
        else:
            option = self._db.write_option(last_update_time=version)
            lean_writes.update(batch, res_doc, record_to_document(record), option=option)
        if isinstance(admission, Admitted):
            stage_admission(
                batch,
                read.state,
                admission,
                now=now,
                tenant_id=record.tenant_id,
                broker_account_id=record.broker_account_id,
            )
        return batch

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
            return None
        if not limits.any():
            return None
        lease = Lease(
            client_intent_id=request.client_intent_id,
            amount_usd=request.amount_usd,
            expires_at=now + self._ttl,
            symbol=request.symbol,
            side=request.side,
            qty=request.qty,
        )
        state = state_from_document(read.state.to_dict() if read.state.exists else None)
        return admit(state, now=now, lease_id=lease_id, lease=lease, limits=limits)

    def _commit(
        self, batch: firestore.WriteBatch, request: ReservationRequest, read: _AcquireRead
    ) -> Any:
        """The reservation's new update time, or the error of a precondition that lost its race."""
        try:
            with store_errors("reservation commit"):
                return batch.commit(**self._policy.kwargs())[0].update_time
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
            order_days=order_days_in(read.state if read is not None else None),
        )

    def _pause(self, attempt: int) -> None:
        jitter_sleep(
            attempt, sleep=self._sleep or time.sleep, uniform=self._uniform or random.uniform
        )


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
    ) -> None:
        """`order_days`: the days the account state's `placed_orders` held when acquire read it
        (a placed release prunes the past ones)."""
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
            with self._turn():
                self._released = self._release(
                    _Ending(outcome, error, broker_order_id, fate_unknown),
                    _Known(self._version, self._record.counted_lease_id, self._riders),
                )
        return self._released

    def _turn(self) -> AbstractContextManager[object]:
        """A release that ends or keeps a hold changes the account's state document: it waits
        its turn behind the acquires that read that document (`account_turns`)."""
        if self._turns is None or self._record.counted_lease_id is None:
            return nullcontext()
        return self._turns.turn(self._record.tenant_id, self._record.broker_account_id)

    def _release(self, ending: _Ending, known: _Known) -> ReleaseResult:
        """Attempt until an answer, a bounded number of times; see `release`."""
        attempts = Attempts[ReleaseResult](
            limit=self._max_attempts,
            pause=self._pause,
            exhausted=lambda: ReservationContentionError(
                f"release of {self._record.client_intent_id!r} kept losing races"
            ),
        )
        return attempts.until_answer(lambda _: self._release_once(ending, known))

    def _release_once(self, ending: _Ending, known: _Known) -> ReleaseResult | Retry:
        """Read (where the version is unknown), decide, build the batch, commit once."""
        if known.version is None:
            current, version = self._read_current()
            if current is None or current.lease_id != self._record.lease_id:
                self._log_fenced(ending, current)
                return ReleaseResult.FENCED
            if current.status is ReservationStatus.RELEASED:
                return ReleaseResult.RECORDED
            # `reserved`, or `expired` by the sweeper while this lease still held it: the
            # outcome we know beats the sweeper's guess, and no newer attempt exists.
            known.version, known.counted = version, current.counted_lease_id
        now = self._clock()
        batch = self._db.batch()
        fence = self._db.write_option(last_update_time=known.version)
        kept = self._stage_end(batch, ending, known, now, fence)
        retry = self._commit_end(batch, known)
        if retry is not None:
            return retry
        self._log_released(ending, now, kept)
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
    ) -> str | None:
        """Stage the account state's end (or kept hold) and the reservation's end under `fence`
        (the precondition on the version we know); the hold kept counting the intent, if any."""
        kept = stage_attempt_end(
            batch,
            self._db,
            self._record,
            ending.outcome,
            now,
            counted_lease_id=known.counted,
            fate_unknown=ending.fate_unknown,
            order_days=self._order_days,
        )
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
        return kept

    def _commit_end(self, batch: firestore.WriteBatch, known: _Known) -> Retry | None:
        """Commit with the riders; None where it landed, `Retry` where it must be built again."""
        if known.riders is not None:
            known.riders.add_to(batch)
        try:
            with store_errors("reservation release"):
                batch.commit(**self._policy.kwargs())
        except RACE_ERRORS:
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
        return None

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


@dataclass
class _Known:
    """What a release knows of the document between its attempts: the version its precondition
    holds the document to (None: read it first), the hold that counts the intent, and the riders
    still to carry (dropped once the store refused them)."""

    version: Any
    counted: str | None
    riders: StagedWrites | None


def _lost_to_the_record(
    lost: Exception, admission: Admitted | Refused | None, read: _AcquireRead
) -> bool:
    """Whether an unread create failed because the reservation exists (then it alone is read
    next): `AlreadyExists` from a batch that created nothing else. A lost precondition on the
    account state, or a state created concurrently, is read again whole."""
    creates_state = isinstance(admission, Admitted) and not read.state.exists
    return isinstance(lost, gexc.AlreadyExists) and not creates_state


class _ReadAll(Retry):
    """Attempt again on a read of all three documents (no pause: no race was lost)."""

    def __init__(self) -> None:
        super().__init__(pause=False)


def _writes_account_state(request: ReservationRequest, budget_read: BudgetRead | None) -> bool:
    """Whether this acquire may write the account's state document (a limit is set; unknown
    until read where no opening read was passed)."""
    if not request.enforce_budget:
        return False
    if budget_read is None:
        return True
    limits = limits_from_account(snapshot_data(budget_read.account))
    return limits is not None and limits.any()


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
