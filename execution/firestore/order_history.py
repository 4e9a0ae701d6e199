"""`FirestoreOrderHistory`: risk's counts, as aggregation queries over the reservation documents.

A placed order is a reservation released with outcome `placed`; an intent in flight is one still
`reserved` and unexpired. Counting these (never streaming them) costs one aggregation per figure.
The queries' composite indexes are declared in `firestore.indexes.json` (checked by a test).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from execution.firestore.reservations import RESERVATIONS
from execution.firestore.support import CallPolicy, store_errors


def _account_reservations(
    db: firestore.Client, tenant_id: str, broker_account_id: str
) -> firestore.Query:
    """The reservations of one broker account (every query below narrows these)."""
    return db.collection("tenants", tenant_id, RESERVATIONS).where(
        filter=FieldFilter("broker_account_id", "==", broker_account_id)
    )


def placed_since_query(
    db: firestore.Client, tenant_id: str, broker_account_id: str, since: datetime
) -> firestore.Query:
    """Reservations of the account released as `placed` at or after `since`."""
    return (
        _account_reservations(db, tenant_id, broker_account_id)
        .where(filter=FieldFilter("outcome", "==", "placed"))
        .where(filter=FieldFilter("released_at", ">=", since))
    )


def in_flight_query(
    db: firestore.Client, tenant_id: str, broker_account_id: str, now: datetime
) -> firestore.Query:
    """Reservations of the account still held by a live lease."""
    return (
        _account_reservations(db, tenant_id, broker_account_id)
        .where(filter=FieldFilter("status", "==", "reserved"))
        .where(filter=FieldFilter("expires_at", ">", now))
    )


def placed_side_query(
    db: firestore.Client, tenant_id: str, broker_account_id: str, symbol: str, side: str
) -> firestore.Query:
    """Placed reservations of the account for one symbol and side."""
    return (
        _account_reservations(db, tenant_id, broker_account_id)
        .where(filter=FieldFilter("symbol", "==", symbol))
        .where(filter=FieldFilter("side", "==", side))
        .where(filter=FieldFilter("outcome", "==", "placed"))
    )


class FirestoreOrderHistory:
    """Counts and sums over one tenant's reservations."""

    def __init__(self, db: firestore.Client, *, policy: CallPolicy) -> None:
        self._db = db
        self._policy = policy

    def orders_today(
        self, tenant_id: str, broker_account_id: str, *, since: datetime, now: datetime
    ) -> int:
        """Placed since `since` plus in flight now."""
        placed = placed_since_query(self._db, tenant_id, broker_account_id, since)
        live = in_flight_query(self._db, tenant_id, broker_account_id, now)
        return int(self._aggregate(placed.count(alias="n"))) + int(
            self._aggregate(live.count(alias="n"))
        )

    def net_position(self, tenant_id: str, broker_account_id: str, symbol: str) -> float:
        """Bought minus sold, in placed orders."""
        bought, sold = (
            self._aggregate(
                placed_side_query(self._db, tenant_id, broker_account_id, symbol, side).sum(
                    "qty", alias="n"
                )
            )
            for side in ("buy", "sell")
        )
        return bought - sold

    def _aggregate(self, aggregation: Any) -> float:
        # Typed as Any: the library annotates `count()`/`sum()` as returning the class and `get()`
        # as a flat list, while at run time it answers one list of results per aggregation.
        with store_errors("risk aggregation"):
            results: Any = aggregation.get(**self._policy.kwargs())
        [[result]] = results
        return float(result.value or 0)
