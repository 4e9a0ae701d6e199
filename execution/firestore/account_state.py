"""The account-state document on Firestore: the writes that change it (its model, and its one
parse, are `execution.documents.AccountStateDocument`).

`tenants/{tenant_id}/execution_inflight/{broker_account_id}` (see `execution.account_state` for
why one document carries every limit)::

    tenant_id, broker_account_id, updated_at   where an acquire admitted a lease
    leases         {lease_id: {client_intent_id, amount_usd, expires_at, symbol, side, qty}}
                   the holds: intents whose order the account may not know yet; `expires_at`
                   is when the lease ends (its expiry, or its release where the hold outlives it)
    exact_positions  {symbol: {shares, billionths}}    net quantity placed, in integers
                   (`execution.positions`), incremented; removed only where closed, by a writer
                   that read it (an admission that needs the room)
    positions      {symbol: float}                        an earlier version's floats: read only
    placed_orders  {"YYYY-MM-DD": orders placed that UTC day}

An acquire rewrites `leases` and `placed_orders` (pruned to yesterday and today), and the
positions where it removes closed ones, under a precondition on the `update_time` it read.
Everything else only increments or deletes single fields, without reading: a concurrent acquire
that read the older version then fails its precondition and reads again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.field_path import FieldPath

from execution.account_state import (
    AccountLimits,
    AccountState,
    Admitted,
    Hold,
    Lease,
    adds_position_entry,
    counted_days,
    first_kept_day,
)
from execution.documents import AccountSettings, MalformedAccountError, leases_to_document
from execution.documents import state_from_document as state_from_document
from execution.firestore import lean_writes
from execution.firestore.account_turns import KnownState
from execution.firestore.paths import INFLIGHT as INFLIGHT
from execution.firestore.paths import inflight_ref
from execution.models import Outcome
from execution.positions import (
    BILLIONTHS,
    EXACT_FIELD,
    SHARES,
    Position,
    positions_fields,
    signed_billionths,
    split,
)
from execution.reservations import ReservationRecord
from execution.telemetry import emit

logger = logging.getLogger(__name__)

Snapshot = firestore.DocumentSnapshot[firestore.DocumentReference]


def account_states_query(db: firestore.Client) -> firestore.Query:
    """Every account's state document, of every tenant (the reconciler's walk over the holds);
    no filter and no order, so no index beyond the built-in one."""
    return db.collection_group(INFLIGHT)


def limits_from_account(data: dict[str, Any] | None) -> AccountLimits | None:
    """The limits acquire counts; None where the document is malformed (risk then rejects it)."""
    if data is None:
        return AccountLimits()
    try:
        settings = AccountSettings.parse(data)
    except MalformedAccountError:
        return None
    return AccountLimits(
        max_inflight_usd=settings.max_inflight_usd,
        max_daily_orders=settings.max_daily_orders,
        max_position_qty=settings.max_position_qty,
    )


def stage_admission(
    batch: firestore.WriteBatch,
    snapshot: Snapshot | KnownState,
    admitted: Admitted,
    *,
    now: datetime,
    tenant_id: str,
    broker_account_id: str,
    positions: dict[str, Position] | None = None,
) -> None:
    """Write the admitted state, conditioned on the version `snapshot` read (or its absence);
    a `KnownState` a writer handed over stands for a read (`account_turns`). `positions`, where
    given, is written whole too (a line carrying placed orders knows the positions they leave)."""
    fields: dict[str, Any] = {
        "leases": leases_to_document(admitted.leases),
        "placed_orders": admitted.placed_orders,
        "updated_at": now,
    }
    if admitted.positions is not None:
        positions = admitted.positions
    if positions is not None:
        fields.update(positions_fields(positions))
    if snapshot.exists:
        option = firestore.Client.write_option(last_update_time=snapshot.update_time)
        lean_writes.update(batch, snapshot.reference, fields, option=option)
    else:
        lean_writes.create(
            batch,
            snapshot.reference,
            {"tenant_id": tenant_id, "broker_account_id": broker_account_id, **fields},
        )


@dataclass(frozen=True)
class PlacedOrder:
    """An order this service placed: what the account's position and daily count must learn.
    `placed_at` is the recorder's clock; the order counts on every day of `days`
    (`execution.account_state.counted_days`)."""

    tenant_id: str
    broker_account_id: str
    symbol: str
    side: str
    qty: float
    placed_at: datetime
    days: tuple[str, ...]

    def signed_billionths(self) -> int:
        """What the order adds to its symbol's position, in billionths of a share."""
        return signed_billionths(self.qty, self.side)

    @classmethod
    def of(cls, record: ReservationRecord, now: datetime, skew: timedelta) -> PlacedOrder:
        """`record`'s order, recorded at `now` by a clock within `skew` of every other."""
        return cls(
            record.tenant_id,
            record.broker_account_id,
            record.symbol,
            record.side,
            record.qty,
            now,
            counted_days(now, skew),
        )


def add_placed_order(
    batch: firestore.WriteBatch,
    db: firestore.Client,
    placed: PlacedOrder,
    *,
    ending_lease_id: str | None = None,
    version: Any = None,
    order_days: Iterable[str] = (),
) -> None:
    """Add "this intent was placed" to `batch`: its quantity joins the position, the count of
    each of its days grows by one, and `ending_lease_id` (its counted lease, if any) leaves the
    in-flight map.
    The days of `order_days` (what the account's `placed_orders` held when read) before
    yesterday are deleted (`first_kept_day`): an account without limits has no admission to
    prune them.

    The one way an order enters the account state: the release of `placed` and the repair of a
    record that learns its order late both call it. It increments without reading, so it must
    ride on a batch that a precondition makes happen once per order (the reservation's own
    fenced update). `version`, where given, is the `update_time` the document must still have.
    """
    increments = _increments(placed.signed_billionths())
    oldest = first_kept_day(placed.placed_at)
    counts: dict[str, Any] = {day: firestore.DELETE_FIELD for day in order_days if day < oldest}
    counts.update({day: firestore.Increment(1) for day in placed.days})
    ref = inflight_ref(db, placed.tenant_id, placed.broker_account_id)
    if version is not None:
        # The same change as a field-path update, which (unlike `set`) takes a precondition.
        changes: dict[tuple[str, ...], Any] = {
            (EXACT_FIELD, placed.symbol, part): increment for part, increment in increments.items()
        }
        changes.update({("placed_orders", day): count for day, count in counts.items()})
        if ending_lease_id is not None:
            changes[("leases", ending_lease_id)] = firestore.DELETE_FIELD
        batch.update(ref, _by_field_path(changes), option=_precondition(version))
        return
    # Only the increments (and, once a day, the past days' deletes): every release of an order
    # of every account writes this, so each field costs every intent (encoded here, decoded by
    # every opening read of the account). Integers: Firestore adds them exactly, unread.
    fields: dict[str, Any] = {
        EXACT_FIELD: {placed.symbol: increments},
        "placed_orders": counts,
    }
    if ending_lease_id is not None:
        fields["leases"] = {ending_lease_id: firestore.DELETE_FIELD}
    lean_writes.merge(batch, ref, fields)


def leave_position(
    batch: firestore.WriteBatch,
    db: firestore.Client,
    tenant_id: str,
    broker_account_id: str,
    symbol: str,
    signed_billionths: int,
) -> None:
    """Add "this order no longer counts" to `batch`: `signed_billionths` (what its placing added)
    leave `symbol`'s position. Unread like `add_placed_order`: it must ride on a batch that a
    precondition makes happen once per order (the record's own conditioned verdict)."""
    ref = inflight_ref(db, tenant_id, broker_account_id)
    lean_writes.merge(batch, ref, {EXACT_FIELD: {symbol: _increments(-signed_billionths)}})


def _increments(billionths: int) -> dict[str, Any]:
    """The exact-position increments that add `billionths` to a symbol's position, unread."""
    shares, rest = split(billionths)
    return {SHARES: firestore.Increment(shares), BILLIONTHS: firestore.Increment(rest)}


def end_lease(
    batch: firestore.WriteBatch,
    db: firestore.Client,
    tenant_id: str,
    broker_account_id: str,
    lease_id: str,
    *,
    version: Any = None,
) -> None:
    """Drop a counted lease that ended without an order (it frees its budget, day and position).

    `version`, where given (a state handed over in the account's turn), is the `update_time` the
    document must still have. Without one, a merge, not an update: where an operator deleted the
    document, an update's NotFound would fail the release's whole batch, and the intent would
    stay `reserved` until its lease lapsed.
    """
    ref = inflight_ref(db, tenant_id, broker_account_id)
    if version is not None:
        field = FieldPath("leases", lease_id).to_api_repr()
        batch.update(ref, {field: firestore.DELETE_FIELD}, option=_precondition(version))
        return
    batch.set(ref, {"leases": {lease_id: firestore.DELETE_FIELD}}, merge=True)


@dataclass(frozen=True)
class StagedEnd:
    """What `stage_attempt_end` staged: the hold the record keeps (its `counted_lease_id`, or
    None), whether the batch writes the account's state document, and, where the writer knew the
    state (`known`), the state the batch leaves once it lands (None: unknown)."""

    kept: str | None
    writes_state: bool = False
    state: AccountState | None = None


def stage_attempt_end(
    batch: firestore.WriteBatch,
    db: firestore.Client,
    record: ReservationRecord,
    outcome: Outcome,
    now: datetime,
    *,
    counted_lease_id: str | None,
    fate_unknown: bool,
    known: KnownState | None = None,
    order_days: Iterable[str] = (),
    clock_skew: timedelta,
) -> StagedEnd:
    """Stage what the end of `record`'s attempt does to its account's state.

    A placed order joins the position and the day's count, its hold ending in the same batch
    (positions are kept for every account, limited or not yet, so a limit set later starts from
    what this service placed). An attempt that knows no order exists ends the hold. An attempt
    whose fate is unknown keeps it against the position and daily orders until a redelivery, the
    settle or the reconciler learns what the broker holds; its lease ends now all the same, so
    it gives the in-flight budget back, as every release does.

    `clock_skew`: how far other instances' clocks may be from `now` (a placed order counts on
    each day they may show, `counted_days`). `known`: the state a writer handed over
    (`account_turns`); the writes then carry a precondition on its `update_time`, and the state
    they leave is worked out without a read.
    """
    if known is not None and not known.exists:
        known = None  # a counted hold lives in a document that exists: this one is out of date
    version = known.update_time if known is not None else None
    base = known.state if known is not None else None
    if outcome is Outcome.PLACED:
        placed = PlacedOrder.of(record, now, clock_skew)
        days = base.placed_orders.keys() if base is not None else order_days
        add_placed_order(
            batch, db, placed, ending_lease_id=counted_lease_id, version=version, order_days=days
        )
        after = None if base is None else _with_order(base, placed, counted_lease_id)
        return StagedEnd(None, writes_state=True, state=after)
    if counted_lease_id is None:
        return StagedEnd(None, state=base)
    if not fate_unknown:
        end_lease(
            batch, db, record.tenant_id, record.broker_account_id, counted_lease_id, version=version
        )
        after = None if base is None else _without_lease(base, counted_lease_id)
        return StagedEnd(None, writes_state=True, state=after)
    if counted_lease_id == record.lease_id:  # an inherited hold's lease ended long ago
        # The whole entry, merged: where an operator deleted the document (or the entry), the
        # hold is written again rather than the release failing or leaving a partial entry.
        hold = Lease(
            record.client_intent_id, record.amount_usd, now, record.symbol, record.side, record.qty
        )
        batch.set(
            inflight_ref(db, record.tenant_id, record.broker_account_id),
            {"leases": leases_to_document({counted_lease_id: hold})},
            merge=True,
        )
        # A rare path: the next writer reads rather than trust a second copy of this change.
        return StagedEnd(counted_lease_id, writes_state=True)
    return StagedEnd(counted_lease_id, state=base)


def state_after_end(
    state: AccountState,
    record: ReservationRecord,
    outcome: Outcome,
    now: datetime,
    *,
    counted_lease_id: str | None,
    fate_unknown: bool,
    clock_skew: timedelta,
) -> StagedEnd | None:
    """What `stage_attempt_end` does to a known `state`, worked out without staging a write (a
    writer that carries a line of ends writes the state they leave once); None on the rare path
    whose result the writer does not know (an inherited hold written again)."""
    if outcome is Outcome.PLACED:
        placed = PlacedOrder.of(record, now, clock_skew)
        after = _with_order(state, placed, counted_lease_id)
        return StagedEnd(None, writes_state=True, state=after)
    if counted_lease_id is None:
        return StagedEnd(None, state=state)
    if not fate_unknown:
        return StagedEnd(None, writes_state=True, state=_without_lease(state, counted_lease_id))
    if counted_lease_id == record.lease_id:
        return None
    return StagedEnd(counted_lease_id, state=state)


def _with_order(state: AccountState, placed: PlacedOrder, lease_id: str | None) -> AccountState:
    """`state` once `add_placed_order` landed on it."""
    after = _without_lease(state, lease_id)
    held = state.positions.get(placed.symbol, Position())
    after.positions[placed.symbol] = held.plus(placed.signed_billionths())
    oldest = first_kept_day(placed.placed_at)
    after.placed_orders = {kept: n for kept, n in state.placed_orders.items() if kept >= oldest}
    for day in placed.days:
        after.placed_orders[day] = state.placed_orders.get(day, 0) + 1
    return after


def _without_lease(state: AccountState, lease_id: str | None) -> AccountState:
    """A copy of `state` (never shared with it) without the lease `lease_id`."""
    return AccountState(
        leases={lid: held for lid, held in state.leases.items() if lid != lease_id},
        positions=dict(state.positions),
        placed_orders=dict(state.placed_orders),
    )


def _by_field_path(changes: dict[tuple[str, ...], Any]) -> dict[str, Any]:
    """`update` fields keyed by escaped field path (a symbol or lease id may hold any character)."""
    return {FieldPath(*path).to_api_repr(): value for path, value in changes.items()}


def _precondition(version: Any) -> Any:
    """The write option holding a document to `version` (its `update_time`); None: no condition."""
    if version is None:
        return None
    return firestore.Client.write_option(last_update_time=version)


def holds_no_position(state: Snapshot | KnownState, symbol: str) -> bool:
    """Whether a placed order of `symbol` would add an entry to the account state's exact
    positions (`adds_position_entry`), asked of a snapshot without parsing all of it."""
    if isinstance(state, KnownState):
        return adds_position_entry(state.state.positions, symbol)
    if not state.exists:
        return True
    try:
        entry = state.get(FieldPath(EXACT_FIELD, symbol).to_api_repr())
    except KeyError:
        return True
    return not isinstance(entry, dict)


def order_days_in(snapshot: Snapshot | None) -> tuple[str, ...]:
    """The days an account-state snapshot's `placed_orders` counts (none where it holds none)."""
    if snapshot is None or not snapshot.exists:
        return ()
    try:
        counts = snapshot.get("placed_orders")
    except KeyError:
        return ()
    return tuple(day for day in counts if isinstance(day, str)) if isinstance(counts, dict) else ()


def holds_in(data: dict[str, Any], path: str) -> list[Hold]:
    """The holds of one account-state document (`path` names it in the logs of a bad entry)."""
    tenant_id = str(data.get("tenant_id") or path.split("/")[1])
    broker_account_id = str(data.get("broker_account_id") or path.rsplit("/", 1)[-1])
    return [
        Hold(
            tenant_id,
            broker_account_id,
            lease_id,
            lease.client_intent_id,
            lease.expires_at,
            lease.symbol,
            lease.side,
            lease.qty,
        )
        for lease_id, lease in state_from_document(data).leases.items()
    ]


def log_kept_hold(record: ReservationRecord, lease_id: str, outcome: Outcome) -> None:
    """Tell operators an intent still counts against its account's position and daily orders
    although its attempt ended: the fate of its order at the broker is unknown."""
    emit(
        logger,
        "exec.limits.fate_unknown",
        logging.WARNING,
        tenant_id=record.tenant_id,
        broker_account_id=record.broker_account_id,
        client_intent_id=record.client_intent_id,
        counted_lease_id=lease_id,
        outcome=outcome.value,
        symbol=record.symbol,
        side=record.side,
        qty=record.qty,
        settled_by="a redelivery, or `python -m execution reconcile` once the lease lapsed",
    )
