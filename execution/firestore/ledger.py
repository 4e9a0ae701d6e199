"""The ledger entry: `tenants/{tenant_id}/ledger_trades/{broker_order_id}`, one per order.

Keyed by the broker's order id, so a repeated write updates, never duplicates. The invocation
stages it and commits it with the release (`execution.firestore.invocation`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.cloud import firestore

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
