"""The account-state document on Firestore: parse it, and stage the writes that change it.

`tenants/{tenant_id}/execution_inflight/{broker_account_id}` (see `execution.account_state` for
why one document carries every limit)::

    tenant_id, broker_account_id, updated_at   where an acquire admitted a lease
    leases         {lease_id: {client_intent_id, amount_usd, expires_at, symbol, side, qty}}
    positions      {symbol: net quantity placed}          only ever incremented
    placed_orders  {"YYYY-MM-DD": orders placed that UTC day}

An acquire rewrites `leases` and `placed_orders` (pruned to today) under a precondition on the
`update_time` it read. Everything else only increments or deletes single fields, without reading:
a concurrent acquire that read the older version then fails its precondition and reads again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.field_path import FieldPath
from pydantic import ValidationError

from execution.account_state import AccountLimits, AccountState, Admitted, Lease, utc_day
from execution.accounts import AccountSettings

INFLIGHT = "execution_inflight"
Snapshot = firestore.DocumentSnapshot[firestore.DocumentReference]


def inflight_ref(
    db: firestore.Client, tenant_id: str, broker_account_id: str
) -> firestore.DocumentReference:
    """`tenants/{tenant_id}/execution_inflight/{broker_account_id}`: the account's state."""
    return db.collection("tenants", tenant_id, INFLIGHT).document(broker_account_id)


def limits_from_account(data: dict[str, Any] | None) -> AccountLimits | None:
    """The limits acquire counts; None where the document is malformed (risk then rejects it)."""
    if data is None:
        return AccountLimits()
    try:
        settings = AccountSettings.model_validate(data)
    except ValidationError:
        return None
    return AccountLimits(
        max_inflight_usd=settings.max_inflight_usd,
        max_daily_orders=settings.max_daily_orders,
        max_position_qty=settings.max_position_qty,
    )


def state_from_document(data: dict[str, Any] | None) -> AccountState:
    """Parse an account-state document (absent: empty)."""
    data = data or {}
    return AccountState(
        leases={
            lease_id: Lease(
                client_intent_id=entry["client_intent_id"],
                amount_usd=float(entry["amount_usd"]),
                expires_at=entry["expires_at"],
                symbol=str(entry.get("symbol") or ""),
                side=str(entry.get("side") or ""),
                qty=float(entry.get("qty") or 0.0),
            )
            for lease_id, entry in (data.get("leases") or {}).items()
        },
        positions={symbol: float(qty) for symbol, qty in (data.get("positions") or {}).items()},
        placed_orders={day: int(n) for day, n in (data.get("placed_orders") or {}).items()},
    )


def leases_to_document(leases: dict[str, Lease]) -> dict[str, Any]:
    """The `leases` map for an account-state document."""
    return {
        lease_id: {
            "client_intent_id": lease.client_intent_id,
            "amount_usd": lease.amount_usd,
            "expires_at": lease.expires_at,
            "symbol": lease.symbol,
            "side": lease.side,
            "qty": lease.qty,
        }
        for lease_id, lease in leases.items()
    }


def stage_admission(
    batch: firestore.WriteBatch,
    snapshot: Snapshot,
    admitted: Admitted,
    *,
    now: datetime,
    tenant_id: str,
    broker_account_id: str,
) -> None:
    """Write the admitted state, conditioned on the version `snapshot` read (or its absence)."""
    fields = {
        "leases": leases_to_document(admitted.leases),
        "placed_orders": admitted.placed_orders,
        "updated_at": now,
    }
    if snapshot.exists:
        option = firestore.Client.write_option(last_update_time=snapshot.update_time)
        batch.update(snapshot.reference, fields, option=option)
    else:
        batch.create(
            snapshot.reference,
            {"tenant_id": tenant_id, "broker_account_id": broker_account_id, **fields},
        )


@dataclass(frozen=True)
class PlacedOrder:
    """An order this service placed: what the account's position and daily count must learn."""

    tenant_id: str
    broker_account_id: str
    symbol: str
    side: str
    qty: float
    placed_at: datetime


def add_placed_order(
    batch: firestore.WriteBatch,
    db: firestore.Client,
    placed: PlacedOrder,
    *,
    ending_lease_id: str | None = None,
) -> None:
    """Add "this intent was placed" to `batch`: its quantity joins the position, the day's count
    grows by one, and `ending_lease_id` (its counted lease, if any) leaves the in-flight map.

    The one way an order enters the account state: the release of `placed` and the repair of a
    record that learns its order late both call it. It increments without reading, so it must
    ride on a batch that a precondition makes happen once per order (the reservation's own
    fenced update).
    """
    signed = placed.qty if placed.side == "buy" else -placed.qty
    # Only the two increments: every release of an order of every account writes this, so each
    # field costs every intent (encoded here, decoded by every opening read of the account).
    fields: dict[str, Any] = {
        "positions": {placed.symbol: firestore.Increment(signed)},
        "placed_orders": {utc_day(placed.placed_at): firestore.Increment(1)},
    }
    if ending_lease_id is not None:
        fields["leases"] = {ending_lease_id: firestore.DELETE_FIELD}
    ref = inflight_ref(db, placed.tenant_id, placed.broker_account_id)
    batch.set(ref, fields, merge=True)


def end_lease(
    batch: firestore.WriteBatch,
    db: firestore.Client,
    tenant_id: str,
    broker_account_id: str,
    lease_id: str,
) -> None:
    """Drop a counted lease that ended without an order (it frees its budget, day and position)."""
    batch.update(
        inflight_ref(db, tenant_id, broker_account_id),
        {FieldPath("leases", lease_id).to_api_repr(): firestore.DELETE_FIELD},
    )
