"""The reconciler: the third safety net, after the `finally` release and the sweeper.

Scheduled (and run by `python -m execution reconcile`), it compares the broker's recent orders with
the records, in both directions:
- every broker order carrying one of our client order ids (`execution.client_order_ids`) must be
  recorded `placed` with its order id: `BrokerTruth.settle` repairs the record where the truth is
  certain (the record ended without an order, or its lease lapsed) and reports what it cannot
  (a live lease still holds the intent; the record names another order; no record at all);
- every record `placed` in the window must name an order the broker has;
- every hold (`execution.account_state`: an intent that still counts against its account's
  position and daily orders because its order's fate is unknown) whose last broker call can no
  longer land is settled by asking the broker by client order id (`BrokerTruth.settle_hold`): the
  order is recorded, or the hold ends. Invocations that died, and calls whose answer was lost
  while no redelivery came, stop counting this way, and only this way;
- every record of unknown fate (`exception`, `expired`: ended while an order may exist), of any
  age, once no call of it can land: the broker is asked by client order id and the record made to
  say the answer (`BrokerTruth.settle_fate`): `placed` with an order that can trade, `rejected`
  with a dead one's id, `stale` where there is none and no delivery can place one any more. A
  record whose message Pub/Sub gave up on (the dead-letter topic) so says what the broker says
  rather than look like a live problem; each is counted in `fates_settled` and logged
  `exec.contradiction.fate_settled` at ERROR;
- every broker order closed with nothing filled (`rejected`, or `canceled`/`expired` at a fill of
  0), met in the listing or by a `placed` record's id (`BrokerTruth.settle_dead`): a record that
  says `placed` with it now says `rejected` and the order leaves its account's position (its
  day's count keeps it), counted in `closed_unfilled` and logged
  `exec.contradiction.closed_unfilled` at ERROR; a record of unknown fate says `rejected` too;
- every `unsettled_order` marker (an outlived attempt's order, or lost answer, that a newer
  attempt's record may not know) on a final record, once the outlived call can no longer land:
  the broker is asked by client order id and the record settled to its answer, the marker
  cleared (`BrokerTruth.settle_marked`), and `exec.contradiction.lingering_marker` logged at
  ERROR, so a marker never waits for a delivery that may never come.

Nothing is concluded from an order's absence unless the broker answered for it: a listing that
fails midway makes the report incomplete (`complete: false`), never a finding, and an intent is
concluded to have no order only by the broker's answer to its own client order id. A broker
order carrying our prefix whose ids could not be ours (a slash, `..`, Firestore's `__x__` form)
is an order no record knows (`exec.contradiction.unrecorded_order`): it is reported and ends
nothing else. The run is bounded by a deadline, like the sweeper's, and safe to run twice at once
and beside a redelivery (every repair is conditioned on the record as read). The records of
unknown fate are settled before the holds: a record's verdict ends the hold it names in the same
write, so the holds left are those whose record could not be settled yet.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from execution.account_state import Hold, UnreadableState
from execution.authority import Authority
from execution.broker_truth import BrokerTruth, HoldSettlement, Settlement
from execution.brokers.base import Broker
from execution.client_order_ids import is_ours, parse_plain
from execution.clock import Clock
from execution.documents import MalformedDocumentError
from execution.errors import AgentModeError, ExecutionError
from execution.models import BrokerOrder, validate_document_id
from execution.reservations import ReservationRecord, ReservationStatus
from execution.telemetry import emit

logger = logging.getLogger(__name__)

UNSETTLED_ERRORS: tuple[type[Exception], ...] = (ExecutionError, MalformedDocumentError)
"""What leaves one order or hold unsettled without ending the run: the store's and the broker's
errors, and a record an operator's edit made unreadable (one bad document hides no other)."""


class PlacedRecords(Protocol):
    """What the reconciler reads of the records."""

    def placed_since(self, since: datetime) -> Iterable[ReservationRecord]:
        """Records released `placed` at or after `since`. Raises `StoreUnavailableError`."""
        ...

    def locate(self, client_order_id: str) -> tuple[str, str] | None:
        """(tenant_id, client_intent_id) of the record carrying `client_order_id`, or None."""
        ...


class MarkedRecords(Protocol):
    """Where the reconciler finds the records carrying an `unsettled_order` marker."""

    def marked(self) -> Iterable[ReservationRecord]:
        """Every record with a marker, of every tenant. Raises `StoreUnavailableError`."""
        ...


class UnknownFates(Protocol):
    """Where the reconciler finds the records whose intent's fate is unknown."""

    def unknown_fates(self) -> Iterable[ReservationRecord]:
        """Every record ended `exception` or `expired`, of every tenant, whatever its age.
        Raises `StoreUnavailableError`."""
        ...


class Holds(Protocol):
    """Where the reconciler finds the holds of every account."""

    def holds(self) -> Iterable[Hold | UnreadableState]:
        """Every hold of every account; an account-state document that cannot be read is an
        `UnreadableState` in its place (one bad document never ends the walk). Raises
        `StoreUnavailableError`."""
        ...


@dataclass
class ReconcileReport:
    """What one run compared and found (answered as JSON by the entry point)."""

    since: str
    listed: int = 0
    ours: int = 0
    agreed: int = 0
    repaired: int = 0
    pending: int = 0
    placed_records: int = 0
    holds_placed: int = 0
    """Holds whose order the broker had: recorded `placed`, now part of the position."""
    holds_released: int = 0
    """Holds of intents the broker has no order of: they stopped counting."""
    holds_pending: int = 0
    """Holds whose intent may still reach the broker (a later run decides)."""
    markers_settled: int = 0
    """`unsettled_order` markers settled to the broker's answer and cleared."""
    fates_settled: int = 0
    """Records of unknown fate that now say the broker's verdict (`rejected` or `stale`)."""
    closed_unfilled: int = 0
    """Records `placed` whose order the broker closed with nothing filled: now `rejected`."""
    conflicts: list[str] = field(default_factory=list)
    missing_at_broker: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    complete: bool = True
    skipped: str | None = None
    """Why nothing was compared (the trading mode forbids asking the broker)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Reconciler:
    """Compares the broker's recent orders with the records; see the module docstring."""

    def __init__(
        self,
        broker: Broker,
        truth: BrokerTruth,
        records: PlacedRecords,
        *,
        authority: Authority,
        clock: Clock,
        lookback_seconds: float,
        deadline_seconds: float,
        holds: Holds | None = None,
        markers: MarkedRecords | None = None,
        fates: UnknownFates | None = None,
        last_call_seconds: float = 0.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """`last_call_seconds`: how long after a lease's expiry a broker call made under it may
        still land (the broker call's deadline plus the clock skew); holds wait that long."""
        self._broker = broker
        self._holds = holds
        self._markers = markers
        self._fates = fates
        self._last_call = timedelta(seconds=last_call_seconds)
        self._authority = authority
        self._truth = truth
        self._records = records
        self._clock = clock
        self._lookback = timedelta(seconds=lookback_seconds)
        self._deadline_seconds = deadline_seconds
        self._monotonic = monotonic

    def reconcile(self) -> ReconcileReport:
        """One pass over the last `lookback_seconds`, both directions."""
        since = self._clock() - self._lookback
        report = ReconcileReport(since=since.isoformat())
        try:
            self._authority.check_mode(broker_is_paper=self._broker.is_paper)
        except AgentModeError as exc:  # OFF and OBSERVE never touch a broker, this one included
            report.skipped = f"the broker is never asked under {exc}"
            emit(logger, "exec.reconcile.skipped", logging.INFO, reason=report.skipped)
            return report
        deadline = self._monotonic() + self._deadline_seconds
        seen = self._settle_broker_orders(since, report, deadline)
        if report.complete:
            self._check_placed_records(since, seen, report, deadline)
        if self._fates is not None:
            self._settle_fates(self._fates, report, deadline)
        if self._holds is not None:
            self._settle_holds(self._holds, report, deadline)
        if self._markers is not None:
            self._settle_markers(self._markers, report, deadline)
        emit(
            logger,
            "exec.reconcile.completed",
            logging.ERROR if report.conflicts or report.missing_at_broker else logging.INFO,
            **{k: v for k, v in report.as_dict().items() if not isinstance(v, list)},
            conflicts=len(report.conflicts),
            missing_at_broker=len(report.missing_at_broker),
            errors=len(report.errors),
        )
        return report

    def _settle_broker_orders(
        self, since: datetime, report: ReconcileReport, deadline: float
    ) -> set[str]:
        """Settle each of our broker orders with its record; the ids of every order listed."""
        seen: set[str] = set()
        try:
            for order in self._broker.list_orders(after=since):
                report.listed += 1
                seen.add(order.broker_order_id)
                if is_ours(order.client_order_id):
                    report.ours += 1
                    self._settle(order, report)
                if self._monotonic() > deadline:
                    self._incomplete(report, "deadline reached while listing orders")
                    break
        except ExecutionError as exc:
            self._incomplete(report, f"listing orders failed: {exc}")
        return seen

    def _settle(self, order: BrokerOrder, report: ReconcileReport) -> None:
        try:
            located = self._locate(order.client_order_id)
        except MalformedDocumentError as exc:
            self._unsettled(report, order.client_order_id, exc)
            return
        if located is None:
            report.conflicts.append(
                f"order {order.broker_order_id} ({order.client_order_id}) has no record"
            )
            emit(
                logger,
                "exec.contradiction.unrecorded_order",
                logging.ERROR,
                broker_order_id=order.broker_order_id,
                client_order_id=order.client_order_id,
            )
            return
        self._settle_order(*located, order, report)

    def _settle_order(
        self, tenant_id: str, client_intent_id: str, order: BrokerOrder, report: ReconcileReport
    ) -> None:
        """Bring the intent's record to `order` (`settle_dead` where it can never fill)."""
        settle = self._truth.settle_dead if order.never_fills() else self._truth.settle
        try:
            settlement = settle(tenant_id, client_intent_id, order, found_by="reconciler")
        except UNSETTLED_ERRORS as exc:
            self._unsettled(report, f"{tenant_id}/{client_intent_id}", exc)
            return
        if settlement is Settlement.CONFLICT:
            report.conflicts.append(
                f"{tenant_id}/{client_intent_id}: broker order {order.broker_order_id} "
                "is not the one recorded"
            )
        else:
            _count(report, settlement)

    def _locate(self, client_order_id: str) -> tuple[str, str] | None:
        """(tenant, intent) of the record of `client_order_id`; None where no record can be it:
        a plain id whose parts are no valid ids (a slash would address another document, or
        none) was never made by `client_order_id_for`."""
        parsed = parse_plain(client_order_id)
        if parsed is None:
            return self._records.locate(client_order_id)
        try:
            for part in parsed:
                validate_document_id(part)
        except ValueError:
            return None
        return parsed[0], parsed[2]

    def _check_placed_records(
        self, since: datetime, seen: set[str], report: ReconcileReport, deadline: float
    ) -> None:
        """Every record placed since `since` must name an order the broker has."""
        try:
            for record in self._records.placed_since(since):
                report.placed_records += 1
                order_id = record.broker_order_id
                order = None if order_id is None or order_id in seen else self._order_of(record)
                if order is not None and order.never_fills():
                    self._settle_order(record.tenant_id, record.client_intent_id, order, report)
                elif order_id is None or (order_id not in seen and order is None):
                    report.missing_at_broker.append(
                        f"{record.tenant_id}/{record.client_intent_id}: order {order_id}"
                    )
                    emit(
                        logger,
                        "exec.contradiction.missing_at_broker",
                        logging.ERROR,
                        tenant_id=record.tenant_id,
                        client_intent_id=record.client_intent_id,
                        broker_order_id=order_id,
                    )
                if self._monotonic() > deadline:
                    self._incomplete(report, "deadline reached while checking placed records")
                    return
        except ExecutionError as exc:
            self._incomplete(report, f"checking placed records failed: {exc}")

    def _settle_fates(self, fates: UnknownFates, report: ReconcileReport, deadline: float) -> None:
        """Settle every record of unknown fate whose lease lapsed long enough ago that no call
        can still land, and that carries no marker (the marker's settle comes first)."""
        lapsed_before = self._clock() - self._last_call
        try:
            for record in fates.unknown_fates():
                if record.expires_at > lapsed_before or record.unsettled_order is not None:
                    continue
                self._settle_fate(record, report)
                if self._monotonic() > deadline:
                    self._incomplete(report, "deadline reached while settling unknown fates")
                    return
        except ExecutionError as exc:
            self._incomplete(report, f"listing records of unknown fate failed: {exc}")

    def _settle_fate(self, record: ReservationRecord, report: ReconcileReport) -> None:
        where = f"{record.tenant_id}/{record.client_intent_id}"
        try:
            settled = self._truth.settle_fate(
                record.tenant_id, record.client_intent_id, last_call_ends=self._last_call
            )
        except UNSETTLED_ERRORS as exc:
            self._unsettled(report, f"fate of {where}", exc)
            return
        if settled is Settlement.CONFLICT:
            report.conflicts.append(f"{where}: the broker's order is not the intent's")
        elif settled is not Settlement.PENDING and settled is not Settlement.AGREED:
            _count(report, settled)

    def _settle_holds(self, holds: Holds, report: ReconcileReport, deadline: float) -> None:
        """Settle every hold whose lease lapsed long enough ago that no call can still land."""
        lapsed_before = self._clock() - self._last_call
        try:
            for hold in holds.holds():
                if isinstance(hold, UnreadableState):
                    self._unreadable(hold, report)
                    continue
                if hold.expires_at > lapsed_before:
                    continue  # its attempt may be alive, or still inside its broker call
                self._settle_hold(hold, report)
                if self._monotonic() > deadline:
                    self._incomplete(report, "deadline reached while settling holds")
                    return
        except ExecutionError as exc:
            self._incomplete(report, f"listing holds failed: {exc}")

    def _settle_markers(
        self, markers: MarkedRecords, report: ReconcileReport, deadline: float
    ) -> None:
        """Settle every marker on a final record whose outlived call can no longer land."""
        lapsed_before = self._clock() - self._last_call
        try:
            for record in markers.marked():
                if not _marker_settleable(record, lapsed_before):
                    continue  # a live attempt settles it before its ack, or a later run does
                self._settle_marker(record, report)
                if self._monotonic() > deadline:
                    self._incomplete(report, "deadline reached while settling markers")
                    return
        except ExecutionError as exc:
            self._incomplete(report, f"listing marked records failed: {exc}")

    def _settle_marker(self, record: ReservationRecord, report: ReconcileReport) -> None:
        where = f"{record.tenant_id}/{record.client_intent_id}"
        try:
            order = self._broker.get_order_by_client_order_id(
                record.tenant_id, record.broker_account_id, record.client_order_id
            )
            settled = self._truth.settle_marked(
                record.tenant_id, record.client_intent_id, order, found_by="reconciler_marker"
            )
        except UNSETTLED_ERRORS as exc:
            self._unsettled(report, f"marker {where}", exc)
            return
        emit(
            logger,
            "exec.contradiction.lingering_marker",
            logging.ERROR,
            tenant_id=record.tenant_id,
            client_intent_id=record.client_intent_id,
            unsettled_order=record.unsettled_order,
            recorded_outcome=record.outcome.value if record.outcome else None,
            broker_order_id=order.broker_order_id if order is not None else None,
            settlement=settled.value,
        )
        if settled is Settlement.CONFLICT:
            report.conflicts.append(f"{where}: its unsettled_order marker cannot be settled")
        elif settled is not Settlement.PENDING:
            report.markers_settled += 1

    @staticmethod
    def _unreadable(state: UnreadableState, report: ReconcileReport) -> None:
        """Its holds are neither settled nor concluded on: the run is partial, an operator must
        repair the document (acquires on that account are refused until then)."""
        report.errors.append(f"{state.path}: {state.problem}")
        report.complete = False
        emit(
            logger,
            "exec.reconcile.state_unreadable",
            logging.ERROR,
            path=state.path,
            problem=state.problem,
        )

    def _settle_hold(self, hold: Hold, report: ReconcileReport) -> None:
        try:
            settled = self._truth.settle_hold(hold, last_call_ends=self._last_call)
        except UNSETTLED_ERRORS as exc:
            self._unsettled(report, f"hold {hold.tenant_id}/{hold.client_intent_id}", exc)
            return
        if settled is HoldSettlement.CONFLICT:
            report.conflicts.append(
                f"{hold.tenant_id}/{hold.client_intent_id}: hold {hold.lease_id} on account "
                f"{hold.broker_account_id} cannot be settled"
            )
            return
        name = f"holds_{settled.value}"
        setattr(report, name, getattr(report, name) + 1)

    def _order_of(self, record: ReservationRecord) -> BrokerOrder | None:
        """The order `record` names, as the broker holds it; None where it has none."""
        assert record.broker_order_id is not None
        return self._broker.get_order(
            record.tenant_id, record.broker_account_id, record.broker_order_id
        )

    @staticmethod
    def _unsettled(report: ReconcileReport, what: str, exc: Exception) -> None:
        """One order or hold could not be settled: the run goes on, and says it is partial."""
        report.errors.append(f"{what}: {type(exc).__name__}: {exc}")
        report.complete = False
        if isinstance(exc, MalformedDocumentError):
            emit(
                logger, "exec.reconcile.malformed_record", logging.ERROR, what=what, error=str(exc)
            )

    @staticmethod
    def _incomplete(report: ReconcileReport, why: str) -> None:
        """Nothing is concluded from what the run did not see: the report says it is partial."""
        report.errors.append(why)
        report.complete = False
        emit(logger, "exec.reconcile.incomplete", logging.WARNING, reason=why)


_COUNTED_AS = {
    Settlement.AGREED: "agreed",
    Settlement.REPAIRED: "repaired",
    Settlement.PENDING: "pending",
    Settlement.CLOSED_UNFILLED: "closed_unfilled",
    Settlement.FATE_SETTLED: "fates_settled",
}


def _count(report: ReconcileReport, settlement: Settlement) -> None:
    """One more of `settlement` in the report (a conflict is listed, not counted)."""
    name = _COUNTED_AS[settlement]
    setattr(report, name, getattr(report, name) + 1)


def _marker_settleable(record: ReservationRecord, lapsed_before: datetime) -> bool:
    """Whether `record`'s marker is the reconciler's to settle: the record is final (a live
    attempt settles its own before it acks; the sweeper ends a lapsed one) and the outlived call
    that left the marker, which was over when it left it, had its lease end before
    `lapsed_before` or left the marker before then."""
    if record.status is ReservationStatus.RESERVED or record.unsettled_order is None:
        return False
    marked_at = record.unsettled_order.get("marked_at")
    return isinstance(marked_at, datetime) and marked_at <= lapsed_before
