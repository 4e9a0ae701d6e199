"""Whether an order a broker holds is the order we asked for: one comparison for every broker.

A client order id found at the broker proves only that *some* order carries it. Before an order is
adopted as an intent's (a duplicate answer, a lookup after an earlier attempt, the reconciler) it
must be that intent's order: same id, instrument, side, quantity, type and limit price.
"""

from __future__ import annotations

from execution.models import MONEY_DECIMAL_PLACES, BrokerOrder, OrderRequest, decimal_text

_ROUND_TRIP = 0.5 * 10.0**-MONEY_DECIMAL_PLACES
"""Brokers echo our decimals as strings (`"10"`, `"100.50"`), which read back as the same float;
a difference below half the finest step an amount may take (`MONEY_DECIMAL_PLACES`) is at most a
broker's rounding of that echo. A relative tolerance would let a large quantity or price differ by
whole shares or cents (one billionth of 1e9 shares is one share)."""


def order_mismatch(request: OrderRequest, order: BrokerOrder) -> str | None:
    """None where `order` is `request` as the broker holds it, else what differs, briefly."""
    differences = [
        f"{name} {found} (ours {wanted})"
        for name, found, wanted, same in (
            _text("client_order_id", order.client_order_id, request.client_order_id),
            ("symbol", order.symbol, request.symbol, same_symbol(order.symbol, request.symbol)),
            _text("side", order.side, request.side),
            ("qty", _shown(order.qty), _shown(request.qty), _same_amount(order.qty, request.qty)),
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
    return found == wanted or abs(found - wanted) < _ROUND_TRIP


def _same_price(found: float | None, wanted: float | None) -> bool:
    if found is None or wanted is None:
        return found is wanted
    return _same_amount(found, wanted)


def _price(value: float | None) -> str:
    return "none" if value is None else _shown(value)


def _shown(value: float) -> str:
    # Every digit that tells two amounts apart: `1000000001`, never `1e+09` for both.
    return decimal_text(value)
