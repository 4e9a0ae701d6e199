"""`PaperBroker`: the embedded default, simulated fills recorded in Firestore.

Orders live at `tenants/{tenant_id}/paper_orders/{client_order_id}`: the document id is the client
order id, so an atomic `create` makes a second order for the same intent impossible, as a real
broker's `client_order_id` uniqueness does. Every paper order fills at once, so a cancel is refused
as Alpaca refuses one of a filled order (`OrderNotCancelableError`). The listing is a query over
every tenant's `paper_orders` by `submitted_at` (the collection-group index is declared in
`firestore.indexes.json`), paged with a document cursor, so orders sharing a timestamp are each
listed once.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from execution.brokers.matching import order_mismatch
from execution.clock import Clock
from execution.documents import PaperOrderDocument
from execution.errors import BrokerRejectedError, BrokerTransientError, OrderNotCancelableError
from execution.firestore import lean_writes
from execution.firestore.paths import PAPER_ORDERS as PAPER_ORDERS
from execution.firestore.paths import paper_order_ref, tenant_collection
from execution.firestore.support import UNAVAILABLE_ERRORS, CallPolicy, snapshot_data
from execution.models import BrokerOrder, OrderRequest

LIST_PAGE_SIZE = 500
"""Documents read per page of the listing."""


def paper_order_by_id_query(
    db: firestore.Client, tenant_id: str, broker_order_id: str
) -> firestore.Query:
    """The tenant's paper order with `broker_order_id` (an equality: the built-in index serves)."""
    orders = tenant_collection(db, tenant_id, PAPER_ORDERS)
    return orders.where(filter=FieldFilter("broker_order_id", "==", broker_order_id)).limit(1)


def paper_orders_listing_query(
    db: firestore.Client, after: datetime, until: datetime | None
) -> firestore.Query:
    """Every tenant's paper orders submitted after `after` (and before `until`), oldest first."""
    query = db.collection_group(PAPER_ORDERS).where(filter=FieldFilter("submitted_at", ">", after))
    if until is not None:
        query = query.where(filter=FieldFilter("submitted_at", "<", until))
    return query.order_by("submitted_at")


class PaperBroker:
    """Fills every order at once at its limit or reference price."""

    is_paper = True

    def __init__(
        self,
        db: firestore.Client,
        *,
        clock: Clock,
        policy: CallPolicy,
        list_page_size: int = LIST_PAGE_SIZE,
        order_ids: Callable[[], str] | None = None,
    ) -> None:
        """`order_ids` makes the broker's order ids (default: `paper-` and a random uuid)."""
        self._db = db
        self._order_ids = order_ids or _new_order_id
        self._clock = clock
        self._policy = policy
        self._page_size = list_page_size

    def place_order(self, order: OrderRequest) -> BrokerOrder:
        """Record a filled order, or return the one already recorded for its client order id."""
        price = order.limit_price or order.reference_price
        if price is None:
            raise BrokerRejectedError("paper broker needs a limit price or a quote to fill at")
        filled = BrokerOrder.for_request(
            order,
            broker_order_id=self._order_ids(),
            status="filled",
            submitted_at=self._clock(),
            filled_avg_price=price,
        )
        doc = paper_order_ref(self._db, order.tenant_id, order.client_order_id)
        try:
            document = PaperOrderDocument.from_order(filled, order.broker_account_id)
            batch = self._db.batch()  # `doc.create`, with the hot path's encoding
            lean_writes.create(batch, doc, document.to_document())
            batch.commit(**self._policy.kwargs())
        except gexc.AlreadyExists:
            return self._existing(order)
        except UNAVAILABLE_ERRORS as exc:
            # The create may have landed: the retry resolves it through the same client order id.
            raise BrokerTransientError(f"paper broker store unavailable: {exc}") from exc
        return filled

    def get_order_by_client_order_id(
        self, tenant_id: str, broker_account_id: str, client_order_id: str
    ) -> BrokerOrder | None:
        """The paper order recorded under `client_order_id`, or None."""
        try:
            ref = paper_order_ref(self._db, tenant_id, client_order_id)
            snap = ref.get(**self._policy.kwargs())
        except UNAVAILABLE_ERRORS as exc:
            raise BrokerTransientError(f"paper broker store unavailable: {exc}") from exc
        data = snapshot_data(snap)
        return None if data is None else PaperOrderDocument.parse(data).to_order()

    def get_order(
        self, tenant_id: str, broker_account_id: str, broker_order_id: str
    ) -> BrokerOrder | None:
        """The tenant's paper order with `broker_order_id`, or None."""
        query = paper_order_by_id_query(self._db, tenant_id, broker_order_id)
        try:
            snaps = list(query.stream(**self._policy.kwargs()))
        except UNAVAILABLE_ERRORS as exc:
            raise BrokerTransientError(f"paper broker store unavailable: {exc}") from exc
        return PaperOrderDocument.parse(snaps[0].to_dict() or {}).to_order() if snaps else None

    def list_orders(
        self, *, after: datetime, until: datetime | None = None
    ) -> Iterator[BrokerOrder]:
        """Every paper order (all tenants) submitted after `after` and before `until`."""
        query = paper_orders_listing_query(self._db, after, until).limit(self._page_size)
        cursor: Any = None
        while True:
            page = query if cursor is None else query.start_after(cursor)
            try:
                snaps = list(page.stream(**self._policy.kwargs()))
            except UNAVAILABLE_ERRORS as exc:
                raise BrokerTransientError(f"paper broker store unavailable: {exc}") from exc
            yield from (PaperOrderDocument.parse(s.to_dict() or {}).to_order() for s in snaps)
            if len(snaps) < self._page_size:
                return
            cursor = snaps[-1]

    def cancel_order(self, tenant_id: str, broker_account_id: str, broker_order_id: str) -> None:
        """Refuse: paper orders fill at once, and a filled one is not cancelable (as at Alpaca)."""
        order = self.get_order(tenant_id, broker_account_id, broker_order_id)
        if order is None:
            raise BrokerRejectedError(f"paper order {broker_order_id} not found")
        raise OrderNotCancelableError(
            f"paper order {broker_order_id} is {order.status}: order is not cancelable"
        )

    def _existing(self, order: OrderRequest) -> BrokerOrder:
        """The order already recorded under the request's client order id, if it is this one."""
        existing = self.get_order_by_client_order_id(
            order.tenant_id, order.broker_account_id, order.client_order_id
        )
        if existing is None:
            raise BrokerTransientError("paper order exists but could not be read")
        mismatch = order_mismatch(order, existing)
        if mismatch is not None:
            raise BrokerRejectedError(
                f"client_order_id {order.client_order_id} is already used by a different paper "
                f"order (id {existing.broker_order_id}: {mismatch})"
            )
        return existing


def _new_order_id() -> str:
    return f"paper-{uuid.uuid4().hex}"
