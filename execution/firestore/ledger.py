"""`FirestoreLedger`: `tenants/{tenant_id}/ledger_trades/{broker_order_id}`, one per order."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.cloud import firestore

from execution.clock import Clock
from execution.firestore.support import CallPolicy, store_errors
from execution.models import BrokerOrder, TradeIntent


def ledger_ref(
    db: firestore.Client, tenant_id: str, broker_order_id: str
) -> firestore.DocumentReference:
    """`tenants/{tenant_id}/ledger_trades/{broker_order_id}`."""
    return db.collection("tenants", tenant_id, "ledger_trades").document(broker_order_id)


def ledger_entry(intent: TradeIntent, order: BrokerOrder, recorded_at: datetime) -> dict[str, Any]:
    """The ledger document's fields for `order`, placed for `intent`."""
    return {
        "tenant_id": intent.tenant_id,
        "broker_account_id": intent.broker_account_id,
        "client_intent_id": intent.client_intent_id,
        "broker_order_id": order.broker_order_id,
        "strategy_id": intent.strategy_id,
        "symbol": order.symbol,
        "side": order.side,
        "qty": order.qty,
        "status": order.status,
        "filled_avg_price": order.filled_avg_price,
        "recorded_at": recorded_at,
    }


class FirestoreLedger:
    """Writes keyed by the broker's order id, so a repeated write updates, never duplicates."""

    def __init__(self, db: firestore.Client, *, clock: Clock, policy: CallPolicy) -> None:
        self._db = db
        self._clock = clock
        self._policy = policy

    def record_trade(self, intent: TradeIntent, order: BrokerOrder) -> None:
        """Upsert the ledger entry for `order`."""
        doc = ledger_ref(self._db, intent.tenant_id, order.broker_order_id)
        with store_errors("ledger write"):
            doc.set(ledger_entry(intent, order, self._clock()), merge=True, **self._policy.kwargs())
