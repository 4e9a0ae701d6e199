"""The ledger entry: `tenants/{tenant_id}/ledger_trades/{broker_order_id}`, one per order.

Keyed by the broker's order id, so a repeated write updates, never duplicates. The invocation
stages it and commits it with the release (`execution.firestore.invocation`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from execution.documents import LedgerEntry, order_fields
from execution.firestore.paths import ledger_ref as ledger_ref
from execution.models import BrokerOrder, TradeIntent


def ledger_entry(intent: TradeIntent, order: BrokerOrder, recorded_at: datetime) -> dict[str, Any]:
    """The ledger document's fields for `order`, placed for `intent`: the ids and strategy are the
    intent's, the order's own fields the broker's (`LedgerEntry` names which are kept)."""
    fields = {**intent.model_dump(), **order_fields(order), "recorded_at": recorded_at}
    return LedgerEntry.parse(fields).to_document()
