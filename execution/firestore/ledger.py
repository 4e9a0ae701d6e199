"""`FirestoreLedger`: `tenants/{tenant_id}/ledger_trades/{broker_order_id}`, one per order."""

from __future__ import annotations

from google.cloud import firestore

from execution.clock import Clock
from execution.firestore.support import CallPolicy, store_errors
from execution.models import BrokerOrder, TradeIntent


class FirestoreLedger:
    """Writes keyed by the broker's order id, so a repeated write updates, never duplicates."""

    def __init__(self, db: firestore.Client, *, clock: Clock, policy: CallPolicy) -> None:
        self._db = db
        self._clock = clock
        self._policy = policy

    def record_trade(self, intent: TradeIntent, order: BrokerOrder) -> None:
        """Upsert the ledger entry for `order`."""
        doc = self._db.collection("tenants", intent.tenant_id, "ledger_trades").document(
            order.broker_order_id
        )
        with store_errors("ledger write"):
            doc.set(
                {
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
                    "recorded_at": self._clock(),
                },
                merge=True,
                **self._policy.kwargs(),
            )
