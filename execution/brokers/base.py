"""The `Broker` port: what the engine and the reconciler need from any broker."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Protocol

from execution.models import BrokerOrder, OrderRequest


class Broker(Protocol):
    """Places, finds, lists and cancels orders; dedupes on `client_order_id`."""

    @property
    def is_paper(self) -> bool:
        """True where this broker cannot move real money (AGENT_MODE=PAPER allows only these)."""
        ...

    def place_order(self, order: OrderRequest) -> BrokerOrder:
        """Place `order`, or return the existing order with the same `client_order_id`.

        Raises `BrokerTransientError` where the order may or may not exist (timeout, connection
        error, 429, 5xx): a retry with the same `client_order_id` resolves it. Raises
        `BrokerRejectedError` where the broker refused it for good, and where an order that is not
        this one (see `execution.brokers.matching.order_mismatch`) already holds its id.
        """
        ...

    def get_order_by_client_order_id(
        self, tenant_id: str, broker_account_id: str, client_order_id: str
    ) -> BrokerOrder | None:
        """The order placed under `client_order_id`, or None.

        Found orders are returned as the broker holds them, unchecked: compare them with the
        request (`order_mismatch`) before adopting one. Raises `BrokerTransientError` where the
        broker did not answer, `BrokerRejectedError` where it refused to look.
        """
        ...

    def get_order(
        self, tenant_id: str, broker_account_id: str, broker_order_id: str
    ) -> BrokerOrder | None:
        """The order with the broker's id `broker_order_id`, or None where the broker has none.

        Raises as `get_order_by_client_order_id` does.
        """
        ...

    def list_orders(
        self, *, after: datetime, until: datetime | None = None
    ) -> Iterator[BrokerOrder]:
        """Every order this broker account holds submitted after `after` (and before `until`).

        Both bounds are exclusive and aware; every status (open, filled, canceled...) is listed,
        each order once, oldest first, fetched page by page as the iteration proceeds. Raises
        `BrokerTransientError` from the iteration where a page cannot be read: the listing is then
        incomplete, and nothing may be concluded from an order's absence.
        """
        ...

    def cancel_order(self, tenant_id: str, broker_account_id: str, broker_order_id: str) -> None:
        """Ask the broker to cancel an open order.

        Raises `OrderNotCancelableError` where the order is already closed (filled, canceled,
        expired, rejected), `BrokerRejectedError` where the broker does not know it, and
        `BrokerTransientError` where the answer is unknown.
        """
        ...
