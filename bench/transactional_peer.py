"""The straightforward peer of our acquire: one `@firestore.transactional` that reads and creates.

The card's words suggest it: a Firestore transaction reads the reservation, the account and its
state document, decides with the same rules (`decide_acquire`, `account_state.admit`) and writes
the reservation and the new state. It is benchmarked next to the default (precondition-guarded
batches, `FirestoreReservationManager`) so the README can show why that is the default. Only the
acquire differs: the release is the default handle's, and the engine and every other stage are
the same.
"""

from __future__ import annotations

import uuid

from google.cloud import firestore

from execution.account_state import Admitted, Lease, Refused, admit
from execution.errors import ReservationContentionError
from execution.firestore.account_state import (
    limits_from_account,
    stage_admission,
    state_from_document,
)
from execution.firestore.reservations import (
    BudgetRead,
    FirestoreReservationManager,
    budget_refs,
    record_from_document,
    record_to_document,
    reservation_ref,
)
from execution.firestore.staged_writes import StagedWrites
from execution.firestore.support import store_errors
from execution.reservations import (
    AcquireAction,
    Acquired,
    Acquisition,
    AlreadyExecuted,
    ReservationRecord,
    ReservationRequest,
    decide_acquire,
    new_record,
)


class TransactionalReservationManager(FirestoreReservationManager):
    """Acquire in one Firestore transaction (the client's own retries); release as the default."""

    def acquire(
        self,
        request: ReservationRequest,
        *,
        budget_read: BudgetRead | None = None,
        riders: StagedWrites | None = None,
    ) -> Acquisition:
        """Reserve in a transaction; `budget_read` is ignored (the transaction reads afresh)."""
        lease_id = uuid.uuid4().hex
        try:
            with store_errors("transactional acquire"):
                answer = _acquire_in(self._db.transaction(), self, request, lease_id)
        except ValueError as exc:  # the client's "failed to commit after N attempts"
            raise ReservationContentionError(str(exc)) from exc
        if isinstance(answer, AlreadyExecuted):
            return answer
        record, refused = answer
        # No version: the transaction does not hand back its write times, so release reads first.
        return Acquired(self._handle(record, None, riders), refused)


@firestore.transactional
def _acquire_in(
    transaction: firestore.Transaction,
    manager: TransactionalReservationManager,
    request: ReservationRequest,
    lease_id: str,
) -> AlreadyExecuted | tuple[ReservationRecord, str | None]:
    db = manager._db
    res_doc = reservation_ref(db, request.tenant_id, request.client_intent_id)
    acc_doc, state_doc = budget_refs(db, request.tenant_id, request.broker_account_id)
    snaps = {s.reference.path: s for s in transaction.get_all([res_doc, acc_doc, state_doc])}
    res_snap, acc_snap, state_snap = (snaps[d.path] for d in (res_doc, acc_doc, state_doc))
    existing = record_from_document(res_snap.to_dict() or {}) if res_snap.exists else None
    now = manager._clock()
    if decide_acquire(existing, request, now) is AcquireAction.DUPLICATE:
        assert existing is not None
        return AlreadyExecuted(existing)
    admission: Admitted | Refused | None = None
    limits = limits_from_account(acc_snap.to_dict() if acc_snap.exists else None)
    if request.enforce_budget and limits is not None and limits.any():
        lease = Lease(
            request.client_intent_id,
            request.amount_usd,
            now + manager._ttl,
            request.symbol,
            request.side,
            request.qty,
        )
        state = state_from_document(state_snap.to_dict() if state_snap.exists else None)
        admission = admit(state, now=now, lease_id=lease_id, lease=lease, limits=limits)
    record = new_record(
        request,
        previous=existing,
        lease_id=lease_id,
        now=now,
        ttl=manager._ttl,
        counts_against_budget=isinstance(admission, Admitted),
    )
    transaction.set(res_doc, record_to_document(record))
    if isinstance(admission, Admitted):
        # The transaction's read already guards the state: its update-time precondition is moot.
        stage_admission(
            transaction,
            state_snap,
            admission,
            now=now,
            tenant_id=request.tenant_id,
            broker_account_id=request.broker_account_id,
        )
    return record, admission.reason if isinstance(admission, Refused) else None
