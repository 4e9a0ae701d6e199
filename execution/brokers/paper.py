"""`PaperBroker`: the embedded default, simulated fills recorded in Firestore.

Orders live at `tenants/{tenant_id}/paper_orders/{client_order_id}`: the document id is the client
order id, so an atomic `create` makes a second order for the same intent impossible, as a real
broker's `client_order_id` uniqueness does.
"""

from __future__ import annotations

import uuid

from google.api_core import exceptions as gexc
from google.cloud import firestore

from execution.clock import Clock
from execution.errors import BrokerRejectedError, BrokerTransientError
from execution.firestore.support import UNAVAILABLE_ERRORS, CallPolicy
from execution.models import BrokerOrder, OrderRequest

PAPER_ORDERS = "paper_orders"


class PaperBroker:
    """Fills every order at once at its limit or reference price."""

    is_paper = True

    def __init__(self, db: firestore.Client, *, clock: Clock, policy: CallPolicy) -> None:
        self._db = db
        self._clock = clock
        self._policy = policy

    def place_order(self, order: OrderRequest) -> BrokerOrder:
        """Record a filled order, or return the one already recorded for its client order id."""
        price = order.limit_price or order.reference_price
        if price is None:
            raise BrokerRejectedError("paper broker needs a limit price or a quote to fill at")
        doc = self._orders(order.tenant_id).document(order.client_order_id)
        filled = BrokerOrder(
            broker_order_id=f"paper-{uuid.uuid4().hex}",
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,
            qty=order.qty,
            status="filled",
            filled_avg_price=price,
        )
        try:
            doc.create(
                {
                    "broker_order_id": filled.broker_order_id,
                    "client_order_id": order.client_order_id,
                    "broker_account_id": order.broker_account_id,
                    "symbol": order.symbol,
                    "side": order.side,
                    "qty": order.qty,
                    "order_type": order.order_type,
                    "limit_price": order.limit_price,
                    "time_in_force": order.time_in_force,
                    "status": filled.status,
                    "filled_avg_price": price,
                    "submitted_at": self._clock(),
                },
                **self._policy.kwargs(),
            )
        except gexc.AlreadyExists:
            existing = self.get_order_by_client_order_id(
                order.tenant_id, order.broker_account_id, order.client_order_id
            )
            if existing is None:
                raise BrokerTransientError("paper order exists but could not be read") from None
            return existing
        except UNAVAILABLE_ERRORS as exc:
            # The create may have landed: the retry resolves it through the same client order id.
            raise BrokerTransientError(f"paper broker store unavailable: {exc}") from exc
        return filled

    def get_order_by_client_order_id(
        self, tenant_id: str, broker_account_id: str, client_order_id: str
    ) -> BrokerOrder | None:
        """The paper order recorded under `client_order_id`, or None."""
        try:
            snap = self._orders(tenant_id).document(client_order_id).get(**self._policy.kwargs())
        except UNAVAILABLE_ERRORS as exc:
            raise BrokerTransientError(f"paper broker store unavailable: {exc}") from exc
        if not snap.exists:
            return None
        data = snap.to_dict() or {}
        return BrokerOrder(
            broker_order_id=data["broker_order_id"],
            client_order_id=data["client_order_id"],
            symbol=data["symbol"],
            side=data["side"],
            qty=float(data["qty"]),
            status=data["status"],
            filled_avg_price=data.get("filled_avg_price"),
        )

    def cancel_order(self, tenant_id: str, broker_account_id: str, broker_order_id: str) -> None:
        """Paper orders fill at once; there is never anything left to cancel."""
        return None

    def _orders(self, tenant_id: str) -> firestore.CollectionReference:
        return self._db.collection("tenants", tenant_id, PAPER_ORDERS)
