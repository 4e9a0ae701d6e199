"""Whether an order a broker holds is the order we asked for: one comparison for every broker.

A client order id found at the broker proves only that *some* order carries it. Before an order is
adopted as an intent's (a duplicate answer, a lookup after an earlier attempt, the reconciler) it
must be that intent's order: same id, instrument, side, quantity, type and limit price.
"""

from __future__ import annotations

import math

from execution.models import BrokerOrder, OrderRequest

_REL_TOLERANCE = 1e-9
"""Brokers echo decimals as strings (`"10"`, `"100.5"`): a float round trip, never a real change."""


def order_mismatch(request: OrderRequest, order: BrokerOrder) -> str | None:
    """None where `order` is `request` as the broker holds it, else what differs, briefly."""
    differences = [
        f"{name} {found} (ours {wanted})"
        for name, found, wanted, same in (
            _text("client_order_id", order.client_order_id, request.client_order_id),
            ("symbol", order.symbol, request.symbol, same_symbol(order.symbol, request.symbol)),
            _text("side", order.side, request.side),
            ("qty", f"{order.qty:g}", f"{request.qty:g}", _same_amount(order.qty, request.qty)),
            _text("type", order.order_type, request.order_type),
            (
                "limit_price",
                _price(order.limit_price),
                _price(request.limit_price),
                _same_price(order.limit_price, request.limit_price),
            ),
        )
        if not same
    ]
    return "; ".join(differences) or None


def same_symbol(found: str, wanted: str) -> bool:
    """Alpaca writes crypto pairs with a slash (`BTC/USD`) whichever way they were sent."""
    return found.replace("/", "").upper() == wanted.replace("/", "").upper()


def _text(name: str, found: str, wanted: str) -> tuple[str, str, str, bool]:
    return name, found, wanted, found == wanted


def _same_amount(found: float, wanted: float) -> bool:
    return math.isclose(found, wanted, rel_tol=_REL_TOLERANCE)


def _same_price(found: float | None, wanted: float | None) -> bool:
    if found is None or wanted is None:
        return found is wanted
    return _same_amount(found, wanted)


def _price(value: float | None) -> str:
    return "none" if value is None else f"{value:g}"
