"""The `Broker` port: what the engine needs from any broker."""

from __future__ import annotations

from typing import Protocol

from execution.models import BrokerOrder, OrderRequest


class Broker(Protocol):
    """Places, finds and cancels orders; dedupes on `client_order_id`."""

    @property
    def is_paper(self) -> bool:
        """True where this broker cannot move real money (AGENT_MODE=PAPER allows only these)."""
        ...

    def place_order(self, order: OrderRequest) -> BrokerOrder:
        """Place `order`, or return the existing order with the same `client_order_id`.

        Raises `BrokerTransientError` where the order may or may not exist (timeout, connection
        error, 429, 5xx): a retry with the same `client_order_id` resolves it. Raises
        `BrokerRejectedError` where the broker refused it for good.
        """
        ...

    def get_order_by_client_order_id(
        self, tenant_id: str, broker_account_id: str, client_order_id: str
    ) -> BrokerOrder | None:
        """The order placed under `client_order_id`, or None."""
        ...

    def cancel_order(self, tenant_id: str, broker_account_id: str, broker_order_id: str) -> None:
        """Ask the broker to cancel an open order."""
        ...
