"""The ledger port: one record per placed order, written best-effort after the broker call."""

from __future__ import annotations

from typing import Protocol

from execution.models import BrokerOrder, TradeIntent


class Ledger(Protocol):
    """Records placed orders."""

    def record_trade(self, intent: TradeIntent, order: BrokerOrder) -> None:
        """Write `tenants/{tenant_id}/ledger_trades/{broker_order_id}` idempotently (may raise)."""
        ...
