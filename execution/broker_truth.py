"""The broker is the truth: bring an intent's record to the order the broker holds.

Two callers find an order the record may not know:
- an invocation whose release was fenced (it outlived its lease; a newer attempt held or ended the
  intent) although it placed or found the intent's order — the second of the three layers in
  ARCHITECTURE.md ("The broker is the truth");
- the reconciler, which compares the broker's recent orders with the records — the third.

Both call `BrokerTruth.settle`. It reads the record and, unless it already names the order, makes
the record say what the broker holds: released, outcome `placed`, the order's id, and a `repair`
map telling what the record said before and who found the order. An order the recorded outcome
forbade (`stale`, `halted`, `rejected`, `dry_run`) is cancelled first where it is still open; the
record stays `placed` whatever the cancel achieves, because an order that reached the broker may
have filled in part, and limits must count it. Every repair and every contradiction that cannot be
repaired is logged at ERROR under a stable event name, for alerting.

Where `settle` finds a newer attempt still holding a live lease (PENDING), the outlived attempt
leaves a marker on the record (`leave_marker`: `unsettled_order`, no fence). That newer attempt
may have asked the broker before the late order landed and record `stale` or `halted`; the
delivery that next meets the final record then asks the broker before it answers `duplicate`
(`settle_marked`), and the repair clears the marker in its fenced write.

The reconciler also calls `BrokerTruth.settle_hold` for each hold (`execution.account_state`)
whose intent's last broker call can no longer land: it asks the broker by client order id, records
the order where there is one, and otherwise ends the hold, so that an order of unknown fate counts
against the account's limits exactly until its fate is known. A hold without a record of its own
(the retention TTL purged it, an operator deleted it, or the tenant reused the intent id for
another account since) is settled by the broker alone, by the client order id the hold's own
(tenant, account, intent) derive: a matching order is counted, no order ends the hold, and
`exec.contradiction.orphaned_hold` is logged at ERROR either way.

An order the broker closed with nothing filled (`BrokerOrder.never_fills`: `rejected`, or
`canceled`/`expired` with a fill of 0) can never trade: a record of no order (`rejected` with its
id, `stale`, `exception`...) agrees with it and is never repaired to `placed`, and its hold ends
uncounted, as where the broker has no order.

Every settlement checks that the record is the order's: a record whose client order id is not the
order's (another account's intent of the same id) is a conflict, never repaired to that order.

The reconciler brings two more records to the broker's verdict (`record_verdict`, one write
conditioned on the record as read, which also ends the hold the record names):
- a record of unknown fate (`exception`, `expired`: ended while an order may exist) that no
  delivery settled (Pub/Sub gave up: the dead-letter topic). `settle_dead` and `settle_fate`
  write what the intent's redelivery would have: `rejected` with the order's id where the broker
  closed it with nothing filled; `stale` where the broker answers it has no order under the
  intent's client order id, no call of the intent can land any more, and no delivery of it can
  be fresh any more (`no_delivery_after` past its acquire: INTENT_MAX_AGE_SECONDS and the skew
  of Pub/Sub's publish time). Before then a redelivery may still place it: the record stays
  `exception` (its hold ends as above). Logged `exec.contradiction.fate_settled` at ERROR.
- a record `placed` whose order the broker closed later with nothing filled (rejected after its
  checks, canceled, expired at the end of its day): `settle_dead` records `rejected` with the
  order's id, and the order's quantity leaves the account's position in the same write, as an
  order answered dead at once never entered it: it never traded, and counting it would refuse
  the account's next orders for good. The day's count keeps it: the order was placed, the limit
  bounds the orders sent a day, and the day (or both days near midnight) it counted on may be
  over. An order closed after part of it filled traded: it stays `placed`, counted whole
  (positions count orders placed, not fills). Logged `exec.contradiction.closed_unfilled` at
  ERROR. Written once: the write is conditioned on the record as read, and the record no longer
  says `placed` after it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from execution.account_state import Hold
from execution.brokers.base import Broker
from execution.brokers.matching import same_symbol
from execution.client_order_ids import client_order_id_for
from execution.clock import Clock
from execution.errors import BrokerRejectedError, ExecutionError, OrderNotCancelableError
from execution.models import BrokerOrder, Outcome
from execution.reservations import ReservationRecord, ReservationStatus
from execution.telemetry import emit

logger = logging.getLogger(__name__)

FORBIDDING_OUTCOMES = frozenset({Outcome.STALE, Outcome.HALTED, Outcome.REJECTED, Outcome.DRY_RUN})
"""Recorded outcomes under which the intent must have no order: a late one is cancelled."""

UNKNOWN_FATE_OUTCOMES = frozenset({Outcome.EXCEPTION, Outcome.EXPIRED})
"""Recorded outcomes that leave the intent's fate to its redelivery: an order may exist."""

FINAL_ORDER_STATUSES = frozenset(
    {"filled", "canceled", "cancelled", "expired", "rejected", "done_for_day", "replaced"}
)
"""Broker order statuses with nothing left to cancel (Alpaca's names)."""


@dataclass(frozen=True)
class VersionedRecord:
    """A reservation record and the store's version of it (a precondition for the repair)."""

    record: ReservationRecord
    version: Any


@dataclass(frozen=True)
class Verdict:
    """What a record must say where the broker holds no order of its intent that can trade."""

    outcome: Outcome
    """`rejected` (the order closed with nothing filled) or `stale` (no order, none can come)."""
    error: str
    broker_order_id: str | None
    repair: dict[str, Any]
    gives_back_position: bool = False
    """The record said `placed`: the order's quantity leaves the account's position."""


class ReservationRecords(Protocol):
    """Reads one intent's reservation and writes what the broker holds onto it."""

    def read(self, tenant_id: str, client_intent_id: str) -> VersionedRecord | None:
        """The record, or None. Raises `StoreUnavailableError`."""
        ...

    def record_order(
        self, current: VersionedRecord, order: BrokerOrder, repair: dict[str, Any], now: datetime
    ) -> bool:
        """Record `order` as the intent's placed order, if the record is still `current`.

        False where it changed since it was read (read again and decide again). Releases the
        lease the record holds, in its account's in-flight document too. Raises
        `StoreUnavailableError`.
        """
        ...

    def mark_unsettled(self, tenant_id: str, client_intent_id: str, marker: dict[str, Any]) -> bool:
        """Write `marker` as the record's `unsettled_order`, whichever lease holds the record (no
        fence), changing nothing else; a fenced write staged before it must then fail its
        precondition. False where no record exists. Raises `StoreUnavailableError`."""
        ...

    def clear_unsettled(self, current: VersionedRecord) -> bool:
        """Remove the record's `unsettled_order`, if the record is still `current` (False where
        it changed since it was read). Raises `StoreUnavailableError`."""
        ...

    def record_verdict(self, current: VersionedRecord, verdict: Verdict, now: datetime) -> bool:
        """End the record with `verdict` (outcome, error, order id, `repair`), if the record is
        still `current`: the hold it names ends, and where `gives_back_position`, the order's
        quantity leaves its account's position (the day's count keeps it), in the same write.
        False where it changed since it was read. Raises `StoreUnavailableError`.
        """
        ...

    def release_hold(self, hold: Hold, current: VersionedRecord) -> bool:
        """End `hold` (no order exists): the account's entry, and the record's `counted_lease_id`
        where it names the hold, if the record is still `current`. False where it changed since
        it was read. Raises `StoreUnavailableError`.
        """
        ...

    def settle_orphan(self, hold: Hold, order: BrokerOrder | None, now: datetime) -> bool:
        """End `hold`, which has no record of its own; where `order` is given, it joins the
        account's position and daily count (recorded at `now`) in the same write. Once: False
        where the account state no longer holds the hold or changed while this was decided.
        Raises `StoreUnavailableError`.
        """
        ...


class Settlement(StrEnum):
    """What `BrokerTruth.settle` found and did."""

    AGREED = "agreed"
    """The record already names the order."""
    REPAIRED = "repaired"
    """The record now names the order (cancelled first where its outcome forbade one)."""
    PENDING = "pending"
    """A live lease holds the intent: its attempt will find the order at the broker itself
    (same client order id), or the reconciler settles it once the lease ends."""
    CONFLICT = "conflict"
    """The record names another order, or no record exists: an operator must look."""
    CLOSED_UNFILLED = "closed_unfilled"
    """The record said `placed`, and the broker closed the order with nothing filled: it says
    `rejected` with the order's id now, and the position no longer counts the order."""
    FATE_SETTLED = "fate_settled"
    """The record's fate was unknown (`exception`, `expired`): it says the broker's verdict now
    (`rejected` with the dead order's id, or `stale`: no order, and none can come)."""


class HoldSettlement(StrEnum):
    """What `BrokerTruth.settle_hold` found and did."""

    PLACED = "placed"
    """The broker holds the intent's order: the record names it, and the hold became position."""
    RELEASED = "released"
    """The broker has no order of the intent and none can land any more: the hold ended."""
    PENDING = "pending"
    """An attempt may still reach the broker, or a write raced: a later run decides."""
    CONFLICT = "conflict"
    """No record, or the broker's order is not the one recorded: an operator must look."""


_MAX_SETTLE_ATTEMPTS = 5
NOT_REQUIRED = "not_required"
UNKNOWN_ORDER = "unknown"
"""A marker's `broker_order_id` where the outlived attempt's broker answer was lost."""


class BrokerTruth:
    """Settles one order against its intent's record; see the module docstring."""

    def __init__(
        self,
        records: ReservationRecords,
        broker: Broker,
        *,
        clock: Clock,
        no_delivery_after: timedelta | None = None,
    ) -> None:
        """`no_delivery_after`: how long after an acquire no delivery of its intent can be fresh
        (INTENT_MAX_AGE_SECONDS and the skew of Pub/Sub's publish time); None: never concluded,
        so an intent of unknown fate without an order keeps its record `exception`."""
        self._records = records
        self._broker = broker
        self._clock = clock
        self._no_delivery_after = no_delivery_after

    def settle(
        self, tenant_id: str, client_intent_id: str, order: BrokerOrder, *, found_by: str
    ) -> Settlement:
        """Make the record of (`tenant_id`, `client_intent_id`) name `order`, where it can.

        `found_by` names the caller for the record and the logs (`outlived_attempt N`,
        `reconciler`). Raises `StoreUnavailableError`.
        """
        cancel: str | None = None  # asked of the broker once, however often the write races
        for _ in range(_MAX_SETTLE_ATTEMPTS):
            current = self._records.read(tenant_id, client_intent_id)
            settlement = _judge(current, order, self._clock())
            if settlement is not None:
                self._report(settlement, tenant_id, client_intent_id, order, current, found_by)
                return settlement
            assert current is not None
            if cancel is None or cancel == NOT_REQUIRED:
                # Decided again on every read: a race lost to a release of `stale` or `halted`
                # turns "not required" into a cancel; a cancel asked for is never asked twice.
                cancel = self._cancel_if_forbidden(current.record, order)
            repair = self._repair_fields(current.record, cancel, found_by)
            if self._records.record_order(current, order, repair, self._clock()):
                self._report(
                    Settlement.REPAIRED, tenant_id, client_intent_id, order, current, found_by
                )
                return Settlement.REPAIRED
        self._report(Settlement.PENDING, tenant_id, client_intent_id, order, None, found_by)
        return Settlement.PENDING

    def settle_dead(
        self, tenant_id: str, client_intent_id: str, order: BrokerOrder, *, found_by: str
    ) -> Settlement:
        """`order` is closed with nothing filled (`BrokerOrder.never_fills`): a record that says
        `placed` with it (CLOSED_UNFILLED), or whose fate is unknown (FATE_SETTLED), is made to say
        `rejected` with its id; any other record is judged as `settle` judges it. Raises
        `StoreUnavailableError`."""
        for _ in range(_MAX_SETTLE_ATTEMPTS):
            current = self._records.read(tenant_id, client_intent_id)
            verdict = _dead_order_verdict(current, order, self._repair_fields, found_by)
            if current is None or verdict is None:
                return self.settle(tenant_id, client_intent_id, order, found_by=found_by)
            if self._records.record_verdict(current, verdict, self._clock()):
                settled = (
                    Settlement.CLOSED_UNFILLED
                    if verdict.gives_back_position
                    else Settlement.FATE_SETTLED
                )
                _log_verdict(settled, current.record, verdict, found_by)
                return settled
        self._report(Settlement.PENDING, tenant_id, client_intent_id, order, None, found_by)
        return Settlement.PENDING

    def settle_fate(
        self, tenant_id: str, client_intent_id: str, *, last_call_ends: timedelta
    ) -> Settlement:
        """Ask the broker for the order of an intent of unknown fate once no broker call of it can
        land (`last_call_ends` after its lease's expiry), and make the record say the answer: an
        order that can trade is recorded `placed` (`settle`), a dead one `rejected` with its id
        (`settle_dead`), and no order `stale` once no delivery of the intent can be fresh
        (PENDING until then: a redelivery may still place it). AGREED where the record's fate is
        known already. Raises `StoreUnavailableError` and the broker's `ExecutionError`s.
        """
        current = self._records.read(tenant_id, client_intent_id)
        if current is None or not fate_unknown(current.record):
            return Settlement.AGREED
        record = current.record
        if self._clock() < record.expires_at + last_call_ends:
            return Settlement.PENDING  # its last attempt may still be inside a broker call
        order = self._broker.get_order_by_client_order_id(
            record.tenant_id, record.broker_account_id, record.client_order_id
        )
        if order is None:
            return self._settle_no_order(current)
        mismatch = _order_mismatch(record.symbol, record.side, record.qty, order)
        if mismatch is not None:
            _log_conflict(record, f"the broker's order under its id is not its own: {mismatch}")
            return Settlement.CONFLICT
        settle = self.settle_dead if order.never_fills() else self.settle
        return settle(tenant_id, client_intent_id, order, found_by="reconciler")

    def _settle_no_order(self, current: VersionedRecord) -> Settlement:
        """The broker has no order of the record's intent, and no call of it can land: `stale`
        once no delivery can place it either."""
        record = current.record
        now = self._clock()
        if self._no_delivery_after is None or now < record.created_at + self._no_delivery_after:
            return Settlement.PENDING
        verdict = Verdict(
            Outcome.STALE,
            "intent_stale: no order at the broker under its client order id, none can land any "
            "more, and no delivery of the intent can be fresh (INTENT_MAX_AGE_SECONDS)",
            None,
            self._repair_fields(record, NOT_REQUIRED, "reconciler"),
        )
        if not self._records.record_verdict(current, verdict, now):
            return Settlement.PENDING  # changed since it was read: a later run decides again
        _log_verdict(Settlement.FATE_SETTLED, record, verdict, "reconciler")
        return Settlement.FATE_SETTLED

    def record(self, tenant_id: str, client_intent_id: str) -> ReservationRecord | None:
        """The intent's record as stored now, or None. Raises `StoreUnavailableError`."""
        current = self._records.read(tenant_id, client_intent_id)
        return current.record if current else None

    def leave_marker(
        self,
        tenant_id: str,
        client_intent_id: str,
        *,
        lease_id: str,
        attempt: int,
        broker_order_id: str | None,
    ) -> bool:
        """Mark the record: the outlived lease `lease_id` may hold an order (`broker_order_id`,
        None where its answer was lost) that a newer attempt's record may not know. False where
        there is no record. Raises `StoreUnavailableError`."""
        marker = {
            "lease_id": lease_id,
            "attempt": attempt,
            "broker_order_id": broker_order_id or UNKNOWN_ORDER,
            "marked_at": self._clock(),
        }
        marked = self._records.mark_unsettled(tenant_id, client_intent_id, marker)
        emit(
            logger,
            "exec.contradiction.marked",
            logging.WARNING,
            tenant_id=tenant_id,
            client_intent_id=client_intent_id,
            lease_id=lease_id,
            broker_order_id=marker["broker_order_id"],
            marked=marked,
        )
        return marked

    def settle_marked(
        self, tenant_id: str, client_intent_id: str, order: BrokerOrder | None, *, found_by: str
    ) -> Settlement:
        """A delivery met a final record with a marker, and asked the broker: `order` is its
        answer for the intent's client order id. Settle the record to it, and clear the marker.

        AGREED where the record names the order (or no order exists and none was named), with
        the marker cleared; the other settlements as `settle` answers them (REPAIRED cleared the
        marker in its write). Raises `StoreUnavailableError`.
        """
        if order is not None:
            settlement = self.settle(tenant_id, client_intent_id, order, found_by=found_by)
            if settlement is not Settlement.AGREED:
                return settlement
        for _ in range(_MAX_SETTLE_ATTEMPTS):
            current = self._records.read(tenant_id, client_intent_id)
            marker = current.record.unsettled_order if current else None
            if current is None or marker is None:
                return Settlement.AGREED
            if order is None and marker.get("broker_order_id") != UNKNOWN_ORDER:
                # The outlived attempt held an answer naming this order: the broker lost it? An
                # operator must look; the marker stays (the reconciler reports it too).
                _log_marker(current.record, "the broker has no order under the intent's id")
                return Settlement.CONFLICT
            if self._records.clear_unsettled(current):
                return Settlement.AGREED
        return Settlement.PENDING

    def settle_hold(self, hold: Hold, *, last_call_ends: timedelta) -> HoldSettlement:
        """Bring `hold` to what the broker holds, once no broker call of its intent can land.

        `last_call_ends`: how long after a lease's expiry a broker call made under it may still
        land (the engine's lease-room margin: the broker call's deadline and the clock skew).
        Raises `StoreUnavailableError` and the broker's `ExecutionError`s.
        """
        current = self._records.read(hold.tenant_id, hold.client_intent_id)
        if current is None:
            return self._settle_orphan(hold, "the intent has no record", last_call_ends)
        record = current.record
        if record.broker_account_id != hold.broker_account_id:
            why = f"the intent's record is of account {record.broker_account_id!r}"
            return self._settle_orphan(hold, why, last_call_ends)
        if self._clock() < record.expires_at + last_call_ends:
            return HoldSettlement.PENDING  # its last attempt may still be inside a broker call
        names_it = record.counted_lease_id == hold.lease_id
        settled: HoldSettlement | None = None
        if names_it or record.outcome is not Outcome.PLACED:
            # Unless the record counts the intent's order already (`placed`), the broker is
            # asked: a record that names another hold or none may have been written again
            # without this one (the intent republished, recorded `stale`, after a purge).
            order = self._broker.get_order_by_client_order_id(
                record.tenant_id, record.broker_account_id, record.client_order_id
            )
            if order is not None and order.never_fills() and record.outcome is not Outcome.PLACED:
                order = None  # closed with nothing filled: the hold ends, counted nowhere
            if order is not None:
                settled = _HOLD_BY_SETTLEMENT[
                    self.settle(
                        hold.tenant_id, hold.client_intent_id, order, found_by="reconciler_hold"
                    )
                ]
                if names_it or settled is not HoldSettlement.PLACED:
                    return settled  # a hold the record named ended in the record's repair
                current = self._records.read(hold.tenant_id, hold.client_intent_id) or current
        # No order, and none can land; a hold its record no longer names (taken over); or a
        # stray hold whose order the record now counts: it must not count it twice.
        if not self._records.release_hold(hold, current):
            return HoldSettlement.PENDING
        why = (
            "its order is counted by its record now"
            if settled is not None
            else "no order that can fill"
        )
        _log_hold(hold, HoldSettlement.RELEASED, f"{why}; recorded {record.status.value}")
        return settled or HoldSettlement.RELEASED

    def _settle_orphan(self, hold: Hold, why: str, last_call_ends: timedelta) -> HoldSettlement:
        """Settle a hold without a record of its own (purged by the retention TTL, or an
        operator's delete) by the broker alone: ask by the client order id its own (tenant,
        account, intent) derive; an order that matches the hold is counted, no order ends the
        hold once no call of its lease can land. Alerted either way: a record is missing."""
        if self._clock() < hold.expires_at + last_call_ends:
            return HoldSettlement.PENDING
        client_order_id = client_order_id_for(
            hold.tenant_id, hold.broker_account_id, hold.client_intent_id
        )
        order = self._broker.get_order_by_client_order_id(
            hold.tenant_id, hold.broker_account_id, client_order_id
        )
        mismatch = _hold_mismatch(hold, order) if order is not None else None
        if mismatch is not None:
            _log_hold(hold, HoldSettlement.CONFLICT, f"{why}; the broker's order {mismatch}")
            return HoldSettlement.CONFLICT
        if order is not None and order.never_fills():
            order = None  # closed with nothing filled: nothing for the account to count
        if not self._records.settle_orphan(hold, order, self._clock()):
            return HoldSettlement.PENDING
        settled = HoldSettlement.RELEASED if order is None else HoldSettlement.PLACED
        emit(
            logger,
            "exec.contradiction.orphaned_hold",
            logging.ERROR,
            tenant_id=hold.tenant_id,
            broker_account_id=hold.broker_account_id,
            client_intent_id=hold.client_intent_id,
            counted_lease_id=hold.lease_id,
            client_order_id=client_order_id,
            broker_order_id=order.broker_order_id if order is not None else None,
            settled=settled.value,
            why=why,
        )
        return settled

    def _repair_fields(
        self, record: ReservationRecord, cancel: str, found_by: str
    ) -> dict[str, Any]:
        return {
            "found_by": found_by,
            "previous_status": record.status.value,
            "previous_outcome": record.outcome.value if record.outcome else None,
            "previous_error": record.error,
            "cancel": cancel,
            "repaired_at": self._clock(),
        }

    def _cancel_if_forbidden(self, record: ReservationRecord, order: BrokerOrder) -> str:
        """Cancel an order its record forbade; what happened, for the record."""
        if record.outcome not in FORBIDDING_OUTCOMES:
            return NOT_REQUIRED
        if order.status.lower() in FINAL_ORDER_STATUSES:
            return f"not_cancelable: {order.status}"
        try:
            self._broker.cancel_order(
                record.tenant_id, record.broker_account_id, order.broker_order_id
            )
        except OrderNotCancelableError as exc:
            return f"not_cancelable: {exc}"[:300]
        except BrokerRejectedError as exc:
            return f"refused: {exc}"[:300]
        except ExecutionError as exc:
            return f"failed: {exc}"[:300]
        return "requested"

    @staticmethod
    def _report(
        settlement: Settlement,
        tenant_id: str,
        client_intent_id: str,
        order: BrokerOrder,
        current: VersionedRecord | None,
        found_by: str,
    ) -> None:
        if settlement is Settlement.AGREED:
            return
        record = current.record if current else None
        emit(
            logger,
            f"exec.contradiction.{settlement.value}",
            logging.ERROR,
            tenant_id=tenant_id,
            client_intent_id=client_intent_id,
            broker_order_id=order.broker_order_id,
            client_order_id=order.client_order_id,
            order_status=order.status,
            found_by=found_by,
            recorded_status=record.status.value if record else None,
            recorded_outcome=record.outcome.value if record and record.outcome else None,
            recorded_broker_order_id=record.broker_order_id if record else None,
        )


def _judge(current: VersionedRecord | None, order: BrokerOrder, now: datetime) -> Settlement | None:
    """The settlement where nothing is to be written; None where the record must be repaired."""
    if current is None:
        return Settlement.CONFLICT
    record = current.record
    if record.client_order_id and record.client_order_id != order.client_order_id:
        return Settlement.CONFLICT  # the record is another intent's: another account's, say
    if record.broker_order_id == order.broker_order_id and record.outcome is Outcome.PLACED:
        return Settlement.AGREED
    if record.broker_order_id not in (None, order.broker_order_id):
        return Settlement.CONFLICT
    if record.status is ReservationStatus.RESERVED and record.expires_at > now:
        return Settlement.PENDING
    if order.never_fills() and record.outcome is not Outcome.PLACED:
        # The broker closed it with nothing filled: a record of no order (`rejected` with its
        # id, `stale`, `exception`...) says what the broker holds that can trade. Repaired to
        # `placed`, it would count a dead order against the account's limits for good.
        return Settlement.AGREED
    return None


_HOLD_BY_SETTLEMENT = {
    Settlement.AGREED: HoldSettlement.PLACED,
    Settlement.REPAIRED: HoldSettlement.PLACED,
    Settlement.PENDING: HoldSettlement.PENDING,
    Settlement.CONFLICT: HoldSettlement.CONFLICT,
    Settlement.CLOSED_UNFILLED: HoldSettlement.RELEASED,
    Settlement.FATE_SETTLED: HoldSettlement.RELEASED,
}


def _hold_mismatch(hold: Hold, order: BrokerOrder) -> str | None:
    """None where `order` is the order `hold` stands for, else what differs: an order that is
    not the hold's is never counted as its."""
    return _order_mismatch(hold.symbol, hold.side, hold.qty, order)


def _order_mismatch(symbol: str, side: str, qty: float, order: BrokerOrder) -> str | None:
    """None where `order` is an order of `qty` `symbol` on `side`, else what differs."""
    differences = [
        f"{name} {found} (expected {expected})"
        for name, found, expected, same in (
            ("symbol", order.symbol, symbol, same_symbol(order.symbol, symbol)),
            ("side", order.side, side, order.side == side),
            ("qty", f"{order.qty:g}", f"{qty:g}", math.isclose(order.qty, qty)),
        )
        if not same
    ]
    return f"{order.broker_order_id}: " + "; ".join(differences) if differences else None


def fate_unknown(record: ReservationRecord) -> bool:
    """Whether `record` ended while an order of its intent may exist (`exception`, `expired`)."""
    return record.status is not ReservationStatus.RESERVED and (
        record.outcome in UNKNOWN_FATE_OUTCOMES
    )


def _dead_order_verdict(
    current: VersionedRecord | None,
    order: BrokerOrder,
    repair: Callable[[ReservationRecord, str, str], dict[str, Any]],
    found_by: str,
) -> Verdict | None:
    """What the record must say of `order`, closed with nothing filled; None where the record
    says nothing `order` contradicts (or is not its record, or carries a marker to settle
    first)."""
    if current is None:
        return None
    record = current.record
    if record.client_order_id != order.client_order_id or record.unsettled_order is not None:
        return None
    dead = f"order {order.broker_order_id} {order.status} at the broker"
    if record.outcome is Outcome.PLACED and record.broker_order_id == order.broker_order_id:
        return Verdict(
            Outcome.REJECTED,
            f"broker_rejected: {dead} after it was placed, nothing filled; it left the "
            "position and stays in its day's count of orders",
            order.broker_order_id,
            {**repair(record, NOT_REQUIRED, found_by), "earlier_repair": record.repair},
            gives_back_position=True,
        )
    if fate_unknown(record) and record.broker_order_id in (None, order.broker_order_id):
        return Verdict(
            Outcome.REJECTED,
            f"broker_rejected: {dead}, nothing filled",
            order.broker_order_id,
            repair(record, NOT_REQUIRED, found_by),
        )
    return None


def _log_verdict(
    settlement: Settlement, record: ReservationRecord, verdict: Verdict, found_by: str
) -> None:
    emit(
        logger,
        f"exec.contradiction.{settlement.value}",
        logging.ERROR,
        tenant_id=record.tenant_id,
        broker_account_id=record.broker_account_id,
        client_intent_id=record.client_intent_id,
        client_order_id=record.client_order_id,
        broker_order_id=verdict.broker_order_id,
        recorded_outcome=record.outcome.value if record.outcome else None,
        outcome=verdict.outcome.value,
        found_by=found_by,
        position_given_back=verdict.gives_back_position,
        why=verdict.error,
    )


def _log_hold(hold: Hold, settlement: HoldSettlement, why: str) -> None:
    emit(
        logger,
        f"exec.limits.hold_{settlement.value}",
        logging.ERROR if settlement is HoldSettlement.CONFLICT else logging.WARNING,
        tenant_id=hold.tenant_id,
        broker_account_id=hold.broker_account_id,
        client_intent_id=hold.client_intent_id,
        counted_lease_id=hold.lease_id,
        why=why,
    )


def _log_marker(record: ReservationRecord, why: str) -> None:
    _log_conflict(record, why, "unsettled_order")


def _log_conflict(record: ReservationRecord, why: str, found_by: str = "reconciler") -> None:
    emit(
        logger,
        f"exec.contradiction.{Settlement.CONFLICT.value}",
        logging.ERROR,
        tenant_id=record.tenant_id,
        client_intent_id=record.client_intent_id,
        client_order_id=record.client_order_id,
        found_by=found_by,
        unsettled_order=record.unsettled_order,
        recorded_outcome=record.outcome.value if record.outcome else None,
        why=why,
    )
