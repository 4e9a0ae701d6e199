"""`SimBroker`: an in-memory `Broker` for the deterministic-simulation tier.

It behaves as Alpaca (and the sandbox in `devtools/alpaca_sandbox.py`) does for what we use, and
`tests/contract/test_broker_contract.py` pins that it does: one order per client order id (a
second request with the same id returns the order if it is the same, and is refused if it is not),
lookups by client order id and by id, the listing (every status, oldest first, exclusive time
bounds), and cancel (open → `canceled`; closed → `OrderNotCancelableError`; unknown →
`BrokerRejectedError`). New orders are `accepted`; `fill` fills one.

Faults are queued per operation (`place`, `lookup`, `get`, `list`, `cancel`) and each is used by
the next call of that operation, so a seed can decide them: a 5xx before the order lands, a
timeout or an unreadable answer after it landed, a refusal. `before_call`, where given, runs at the
start of every call with the operation's name: the simulation's scheduler uses it to pause an
invocation there or to advance time.
"""

from __future__ import annotations

import itertools
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime
from enum import Enum

from execution.brokers.matching import order_mismatch
from execution.errors import BrokerRejectedError, BrokerTransientError, OrderNotCancelableError
from execution.models import BrokerOrder, OrderRequest

CLOSED_STATUSES = frozenset({"filled", "canceled", "expired", "rejected", "replaced"})
OPERATIONS = ("place", "lookup", "get", "list", "cancel")


class SimFault(Enum):
    """What the next call of one operation does instead of answering."""

    SERVER_ERROR = "5xx before the broker acts"
    TIMEOUT_AFTER_ACCEPT = "the broker acts, the answer times out"
    GARBAGE_AFTER_ACCEPT = "the broker acts, the answer is unreadable"
    REFUSED = "4xx: the request refused for good"
    KEYS_REFUSED = "401/403: our keys refused (a rotation, a wrong URL): retried"

    @property
    def acts_first(self) -> bool:
        return self in {SimFault.TIMEOUT_AFTER_ACCEPT, SimFault.GARBAGE_AFTER_ACCEPT}


class SimBroker:
    """Orders in a dict, faults from a queue, time from the injected clock."""

    def __init__(
        self,
        *,
        clock: Callable[[], datetime],
        is_paper: bool = True,
        before_call: Callable[[str], None] | None = None,
    ) -> None:
        self._clock = clock
        self._is_paper = is_paper
        self._before_call = before_call
        self._ids = (f"sim-{n:06d}" for n in itertools.count(1))
        self.orders: dict[str, BrokerOrder] = {}
        """By client order id, in submission order."""
        self.faults: dict[str, deque[SimFault]] = defaultdict(deque)
        self.injected: list[tuple[str, SimFault]] = []
        """Every fault used so far, in order (for the simulation's one-line report)."""

    @property
    def is_paper(self) -> bool:
        """As configured (the simulation plays both paper and live accounts)."""
        return self._is_paper

    def inject(self, operation: str, *faults: SimFault) -> None:
        """Queue `faults` for the next calls of `operation` (one of `OPERATIONS`)."""
        if operation not in OPERATIONS:
            raise ValueError(f"unknown operation {operation!r}; one of {OPERATIONS}")
        self.faults[operation].extend(faults)

    def fill(self, client_order_id: str, price: float) -> None:
        """Fill an order completely at `price`."""
        order = self.orders[client_order_id]
        self.orders[client_order_id] = replace(order, status="filled", filled_avg_price=price)

    def place_order(self, order: OrderRequest) -> BrokerOrder:
        """Place `order`, or return the existing order with the same `client_order_id`."""
        fault = self._begin("place")
        existing = self.orders.get(order.client_order_id)
        if existing is None:
            existing = BrokerOrder.for_request(
                order, broker_order_id=next(self._ids), status="accepted",
                submitted_at=self._clock(),
            )  # fmt: skip
            self.orders[order.client_order_id] = existing
        _after_acting(fault, "place")
        mismatch = order_mismatch(order, existing)
        if mismatch is not None:
            raise BrokerRejectedError(
                f"client_order_id {order.client_order_id} is already used by a different "
                f"order (id {existing.broker_order_id}: {mismatch})"
            )
        return existing

    def get_order_by_client_order_id(
        self, tenant_id: str, broker_account_id: str, client_order_id: str
    ) -> BrokerOrder | None:
        """The order placed under `client_order_id`, or None."""
        _after_acting(self._begin("lookup"), "lookup")
        return self.orders.get(client_order_id)

    def get_order(
        self, tenant_id: str, broker_account_id: str, broker_order_id: str
    ) -> BrokerOrder | None:
        """The order with `broker_order_id`, or None."""
        _after_acting(self._begin("get"), "get")
        return self._by_id(broker_order_id)

    def list_orders(
        self, *, after: datetime, until: datetime | None = None
    ) -> Iterator[BrokerOrder]:
        """Every order submitted after `after` (and before `until`), oldest first.

        A generator like the real brokers' listings: the call happens, and faults strike, on the
        first `next()`.
        """
        _after_acting(self._begin("list"), "list")
        listed = [
            order
            for order in self.orders.values()
            if order.submitted_at is not None
            and order.submitted_at > after
            and (until is None or order.submitted_at < until)
        ]
        yield from sorted(listed, key=lambda order: order.submitted_at or after)

    def cancel_order(self, tenant_id: str, broker_account_id: str, broker_order_id: str) -> None:
        """Cancel an open order; a closed one is not cancelable, an unknown one is refused."""
        fault = self._begin("cancel")
        order = self._by_id(broker_order_id)
        if order is not None and order.status not in CLOSED_STATUSES:
            self.orders[order.client_order_id] = replace(order, status="canceled")
        _after_acting(fault, "cancel")
        if order is None:
            raise BrokerRejectedError(f"order {broker_order_id} not found")
        if order.status in CLOSED_STATUSES:
            raise OrderNotCancelableError(f"order {broker_order_id} is {order.status}")

    def _by_id(self, broker_order_id: str) -> BrokerOrder | None:
        return next((o for o in self.orders.values() if o.broker_order_id == broker_order_id), None)

    def _begin(self, operation: str) -> SimFault | None:
        """Start a call: the hook, then the next fault; one that strikes first raises here."""
        if self._before_call is not None:
            self._before_call(operation)
        queue = self.faults[operation]
        fault = queue.popleft() if queue else None
        if fault is None:
            return None
        self.injected.append((operation, fault))
        if not fault.acts_first:
            _raise(fault, operation)
        return fault


def _after_acting(fault: SimFault | None, operation: str) -> None:
    """The broker has acted; a fault that strikes after acting loses the answer now."""
    if fault is not None and fault.acts_first:
        _raise(fault, operation)


def _raise(fault: SimFault, operation: str) -> None:
    text = f"sim broker {operation}: {fault.value}"
    if fault is SimFault.REFUSED:
        raise BrokerRejectedError(text)
    raise BrokerTransientError(text)
