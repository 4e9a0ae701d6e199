"""`order_mismatch`: the one comparison between an order found at a broker and our request."""

from __future__ import annotations

from typing import Any

import pytest

from execution.brokers.matching import order_mismatch
from execution.models import BrokerOrder, OrderRequest
from tests.support.builders import make_order_request


def request(**overrides: Any) -> OrderRequest:
    return make_order_request(client_order_id="ex1-abc", **overrides)


def found_for(wanted: OrderRequest, **overrides: Any) -> BrokerOrder:
    order = BrokerOrder.for_request(
        wanted, broker_order_id="o-1", status="accepted", submitted_at=None
    )
    return BrokerOrder(**{**order.__dict__, **overrides})


def test_the_order_placed_for_a_request_matches_it() -> None:
    wanted = request()

    assert order_mismatch(wanted, found_for(wanted)) is None


def test_alpacas_crypto_pair_with_a_slash_matches_our_symbol() -> None:
    wanted = request(symbol="BTCUSD")

    assert order_mismatch(wanted, found_for(wanted, symbol="BTC/USD")) is None


def test_decimals_echoed_through_strings_still_match() -> None:
    wanted = request(qty=0.1 + 0.2, limit_price=100.5)

    assert order_mismatch(wanted, found_for(wanted, qty=0.3, limit_price=float("100.50"))) is None


@pytest.mark.parametrize(
    ("overrides", "said"),
    [
        ({"client_order_id": "ex1-other"}, "client_order_id ex1-other (ours ex1-abc)"),
        ({"symbol": "MSFT"}, "symbol MSFT (ours AAPL)"),
        ({"side": "sell"}, "side sell (ours buy)"),
        ({"qty": 5.0}, "qty 5 (ours 10)"),
        ({"order_type": "market", "limit_price": None}, "type market (ours limit)"),
        ({"limit_price": 101.0}, "limit_price 101 (ours 100.5)"),
        ({"limit_price": None}, "limit_price none (ours 100.5)"),
    ],
)
def test_each_difference_is_named(overrides: dict[str, Any], said: str) -> None:
    wanted = request()

    mismatch = order_mismatch(wanted, found_for(wanted, **overrides))

    assert mismatch is not None and said in mismatch


def test_the_time_in_force_and_status_do_not_make_another_order() -> None:
    wanted = request()

    found = found_for(wanted, time_in_force="gtc", status="filled")

    assert order_mismatch(wanted, found) is None
