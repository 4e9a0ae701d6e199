"""`FirestoreReservationRecords`: one intent's reservation, read and repaired to the broker's truth.

The repair is one batch conditioned on the `update_time` read, so it never overwrites a record
that changed meanwhile (a newer attempt's release, the sweeper): the caller reads and decides again.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from execution.account_state import (
    DEFAULT_CLOCK_SKEW_SECONDS,
    Hold,
    UnreadableState,
    counted_days,
)
from execution.broker_truth import Verdict, VersionedRecord
from execution.documents import (
    UNSETTLED_ORDER,
    MalformedDocumentError,
    ended_fields,
    reservation_from_document,
)
from execution.firestore.account_state import (
    PlacedOrder,
    account_states_query,
    add_placed_order,
    end_lease,
    holds_in,
    leave_position,
    state_from_document,
)
from execution.firestore.paths import inflight_ref, reservation_ref
from execution.firestore.support import RACE_ERRORS, CallPolicy, store_errors
from execution.models import BrokerOrder, Outcome
from execution.positions import signed_billionths
from execution.reservations import ReservationStatus


class FirestoreReservationRecords:
    """The `ReservationRecords` port on Firestore."""

    def __init__(
        self,
        db: firestore.Client,
        *,
        policy: CallPolicy,
        retention: timedelta,
        clock_skew: timedelta = timedelta(seconds=DEFAULT_CLOCK_SKEW_SECONDS),
    ) -> None:
        """`clock_skew`: CLOCK_SKEW_SECONDS (an order recorded here counts on each day it spans)."""
        self._db = db
        self._clock_skew = clock_skew
        self._policy = policy
        self._retention = retention

    def read(self, tenant_id: str, client_intent_id: str) -> VersionedRecord | None:
        """The record and its update time, or None."""
        with store_errors("reservation record read"):
            snap = reservation_ref(self._db, tenant_id, client_intent_id).get(
                **self._policy.kwargs()
            )
        if not snap.exists:
            return None
        return VersionedRecord(reservation_from_document(snap.to_dict() or {}), snap.update_time)

    def record_order(
        self, current: VersionedRecord, order: BrokerOrder, repair: dict[str, Any], now: datetime
    ) -> bool:
        """Released, `placed`, the order's id and `repair`, if the record is still `current`."""
        rec = current.record
        batch = self._db.batch()
        self._stage_ended(
            batch,
            current,
            now,
            Outcome.PLACED,
            error=None,
            broker_order_id=order.broker_order_id,
            repair=repair,
            clears_marker=True,  # the broker's truth is on the record now
        )
        # The order joins the account's position and daily count, once: this batch is
        # conditioned on the record as read, and the record was not `placed` then. The hold
        # that counted it meanwhile ends in the same batch.
        add_placed_order(
            batch,
            self._db,
            PlacedOrder.of(rec, now, self._clock_skew),
            ending_lease_id=rec.counted_lease_id,
        )
        return self._commit(batch, "reservation repair")

    def _stage_ended(
        self,
        batch: firestore.WriteBatch,
        current: VersionedRecord,
        now: datetime,
        outcome: Outcome,
        *,
        error: str | None,
        broker_order_id: str | None,
        repair: dict[str, Any],
        clears_marker: bool = False,
    ) -> None:
        """Stage the record `current` released with `outcome`, `error`, `broker_order_id` and
        `repair`, its hold no longer counted (and its marker cleared where asked), conditioned
        on the record as read."""
        rec = current.record
        ended = ended_fields(
            ReservationStatus.RELEASED,
            outcome,
            error=error,
            released_at=rec.released_at or now,
            purge_at=now + self._retention,
        )
        fields = {
            **ended,
            "broker_order_id": broker_order_id,
            "repair": repair,
            "counted_lease_id": None,
        }
        if clears_marker:
            fields[UNSETTLED_ORDER] = None
        batch.update(
            reservation_ref(self._db, rec.tenant_id, rec.client_intent_id),
            fields,
            option=self._db.write_option(last_update_time=current.version),
        )

    def mark_unsettled(self, tenant_id: str, client_intent_id: str, marker: dict[str, Any]) -> bool:
        """`marker` as the record's `unsettled_order`, whatever lease holds it: an update without
        a precondition (the writer is outlived, a fence would always refuse it), which changes
        the record's update time, so a release staged before it must read the record again."""
        try:
            with store_errors("reservation marker"):
                reservation_ref(self._db, tenant_id, client_intent_id).update(
                    {UNSETTLED_ORDER: marker}, **self._policy.kwargs()
                )
        except gexc.NotFound:
            return False
        return True

    def clear_unsettled(self, current: VersionedRecord) -> bool:
        """Remove the marker, if the record is still `current`."""
        rec = current.record
        batch = self._db.batch()
        batch.update(
            reservation_ref(self._db, rec.tenant_id, rec.client_intent_id),
            {UNSETTLED_ORDER: None},
            option=self._db.write_option(last_update_time=current.version),
        )
        return self._commit(batch, "reservation marker clear")

    def record_verdict(self, current: VersionedRecord, verdict: Verdict, now: datetime) -> bool:
        """Ended with `verdict`, if the record is still `current`; its hold ends, and its order
        leaves the position where the verdict says so, in the same batch (so once)."""
        rec = current.record
        batch = self._db.batch()
        self._stage_ended(
            batch,
            current,
            now,
            verdict.outcome,
            error=verdict.error,
            broker_order_id=verdict.broker_order_id,
            repair=verdict.repair,
        )
        if rec.counted_lease_id is not None:
            end_lease(batch, self._db, rec.tenant_id, rec.broker_account_id, rec.counted_lease_id)
        if verdict.gives_back_position:
            leave_position(
                batch,
                self._db,
                rec.tenant_id,
                rec.broker_account_id,
                rec.symbol,
                signed_billionths(rec.qty, rec.side),
            )
        return self._commit(batch, "reservation verdict")

    def release_hold(self, hold: Hold, current: VersionedRecord) -> bool:
        """End `hold`: the broker has no order of its intent and none can land any more."""
        batch = self._db.batch()
        rec = current.record
        if rec.counted_lease_id == hold.lease_id:
            batch.update(
                reservation_ref(self._db, rec.tenant_id, rec.client_intent_id),
                {"counted_lease_id": None},
                option=self._db.write_option(last_update_time=current.version),
            )
        end_lease(batch, self._db, hold.tenant_id, hold.broker_account_id, hold.lease_id)
        return self._commit(batch, "hold release")

    def settle_orphan(self, hold: Hold, order: BrokerOrder | None, now: datetime) -> bool:
        """End `hold`, which has no record of its own; `order`, where given, joins the account's
        position and daily count in the same write. Conditioned on the account state as read
        still holding the hold, so an order is counted once."""
        ref = inflight_ref(self._db, hold.tenant_id, hold.broker_account_id)
        with store_errors("account state read"):
            snap = ref.get(**self._policy.kwargs())
        if not snap.exists:
            return False
        lease = state_from_document(snap.to_dict() or {}).leases.get(hold.lease_id)
        if lease is None:
            return False  # ended meanwhile (a redelivery took it over, another run)
        batch = self._db.batch()
        if order is None:
            end_lease(
                batch,
                self._db,
                hold.tenant_id,
                hold.broker_account_id,
                hold.lease_id,
                version=snap.update_time,
            )
        else:
            placed = PlacedOrder(
                hold.tenant_id,
                hold.broker_account_id,
                lease.symbol,
                lease.side,
                lease.qty,
                now,
                counted_days(now, self._clock_skew),
            )
            add_placed_order(
                batch, self._db, placed, ending_lease_id=hold.lease_id, version=snap.update_time
            )
        return self._commit(batch, "orphaned hold settle")

    def holds(self) -> Iterator[Hold | UnreadableState]:
        """Every hold of every account (one read per account-state document); a document that
        cannot be read is an `UnreadableState` in its place."""
        with store_errors("account states listing"):
            for snap in account_states_query(self._db).stream(**self._policy.kwargs()):
                try:
                    found = holds_in(snap.to_dict() or {}, snap.reference.path)
                except MalformedDocumentError as exc:
                    yield UnreadableState(snap.reference.path, str(exc))
                    continue
                yield from found

    def _commit(self, batch: firestore.WriteBatch, what: str) -> bool:
        try:
            with store_errors(what):
                batch.commit(**self._policy.kwargs())
        except RACE_ERRORS:
            return False
        return True
