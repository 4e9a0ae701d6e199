"""The ledger entry: `tenants/{tenant_id}/ledger_trades/{broker_order_id}`, one per order.

Keyed by the broker's order id, so a repeated write updates, never duplicates. The invocation
stages it and commits it with the release (`execution.firestore.invocation`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from execution.documents import LedgerEntry
from execution.firestore.paths import ledger_ref as ledger_ref
from execution.models import BrokerOrder, TradeIntent


def ledger_entry(intent: TradeIntent, order: BrokerOrder, recorded_at: datetime) -> dict[str, Any]:
    """The ledger document's fields for `order`, placed for `intent`."""
    return LedgerEntry(
        tenant_id=intent.tenant_id,
        broker_account_id=intent.broker_account_id,
        client_intent_id=intent.client_intent_id,
        broker_order_id=order.broker_order_id,
        strategy_id=intent.strategy_id,
        symbol=order.symbol,
        side=order.side,
        qty=order.qty,
        status=order.status,
        filled_avg_price=order.filled_avg_price,
        recorded_at=recorded_at,
    ).to_document()
