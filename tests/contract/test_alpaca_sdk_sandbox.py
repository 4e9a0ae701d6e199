"""The sandbox answers as Alpaca does: Alpaca's own Python SDK (alpaca-py) drives it.

`devtools/alpaca_sandbox.py` stands in for Alpaca in the unit, chaos and e2e tiers. A fake that the
official client cannot use proves little about the real API, so this module pins the sandbox to
what `TradingClient` sends and expects: qty as a JSON number (the SDK's) and as a string (ours),
notional market orders, limit orders, the duplicate client order id answer, lookups by client order
id and by id, the order listing with `status`/`after`/`until`/`limit`/`direction`, cancel, and the
account. Every answer is parsed by the SDK's own models, so a missing or mistyped field fails here.
"""

from __future__ import annotations

import warnings
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from devtools.alpaca_sandbox import KEY_ID, SECRET_KEY, AlpacaSandbox
from execution.clock import FakeClock

with warnings.catch_warnings():
    # alpaca-py 0.44 imports websockets' deprecated legacy client for its streams, which this
    # module never uses; the suite turns warnings into errors.
    warnings.simplefilter("ignore", DeprecationWarning)
    from alpaca.common.enums import Sort
    from alpaca.common.exceptions import APIError
    from alpaca.trading.client import TradingClient
    from alpaca.trading.enums import OrderSide, OrderStatus, QueryOrderStatus, TimeInForce
    from alpaca.trading.models import Order
    from alpaca.trading.requests import GetOrdersRequest, LimitOrderRequest, MarketOrderRequest


@pytest.fixture
def sdk(sandbox: AlpacaSandbox) -> TradingClient:
    return TradingClient(KEY_ID, SECRET_KEY, paper=True, url_override=sandbox.base_url)


def market(coid: str, qty: float = 3, side: OrderSide = OrderSide.BUY) -> MarketOrderRequest:
    return MarketOrderRequest(
        symbol="AAPL", qty=qty, side=side, time_in_force=TimeInForce.DAY, client_order_id=coid
    )


def submit(sdk: TradingClient, request: MarketOrderRequest | LimitOrderRequest) -> Order:
    order = sdk.submit_order(request)
    assert isinstance(order, Order)
    return order


def api_error(call: Any, *args: Any) -> APIError:
    with pytest.raises(APIError) as caught:
        call(*args)
    return caught.value


def listed(sdk: TradingClient, **filters: Any) -> list[str]:
    orders = sdk.get_orders(GetOrdersRequest(**filters))
    assert isinstance(orders, list)
    return [order.client_order_id for order in orders]


# --- submit ---------------------------------------------------------------------------------


def test_a_market_order_with_qty_as_a_json_number_is_accepted(sdk: TradingClient) -> None:
    order = submit(sdk, market("c-1", qty=3))

    assert (order.client_order_id, order.symbol, order.side) == ("c-1", "AAPL", OrderSide.BUY)
    assert float(order.qty or 0) == 3
    assert order.status == OrderStatus.ACCEPTED
    assert order.notional is None


def test_a_limit_order_is_accepted_with_its_limit_price(sdk: TradingClient) -> None:
    order = submit(
        sdk,
        LimitOrderRequest(
            symbol="AAPL",
            qty=2,
            side=OrderSide.SELL,
            time_in_force=TimeInForce.GTC,
            limit_price=100.5,
            client_order_id="c-limit",
        ),
    )

    assert float(order.limit_price or 0) == 100.5
    assert order.time_in_force == TimeInForce.GTC
    assert order.type is not None and order.type.value == "limit"


def test_a_notional_market_order_is_accepted_without_a_qty(sdk: TradingClient) -> None:
    order = submit(
        sdk,
        MarketOrderRequest(
            symbol="AAPL",
            notional=250.0,
            side=OrderSide.BUY,
            time_in_force=TimeInForce.DAY,
            client_order_id="c-notional",
        ),
    )

    assert float(order.notional or 0) == 250
    assert order.qty is None


def test_qty_as_a_string_is_accepted_and_reads_back_through_the_sdk(
    sandbox: AlpacaSandbox, sdk: TradingClient
) -> None:
    body = {
        "symbol": "AAPL",
        "qty": "2.5",
        "side": "buy",
        "type": "limit",
        "limit_price": "99.25",
        "time_in_force": "day",
        "client_order_id": "c-string",
    }
    headers = {"APCA-API-KEY-ID": KEY_ID, "APCA-API-SECRET-KEY": SECRET_KEY}
    answer = httpx.post(f"{sandbox.base_url}/v2/orders", json=body, headers=headers)

    order = sdk.get_order_by_client_id("c-string")
    assert answer.status_code == 200
    assert isinstance(order, Order)
    assert (order.qty, order.limit_price) == ("2.5", "99.25")


def test_a_second_order_with_the_same_client_order_id_is_refused_with_422(
    sandbox: AlpacaSandbox, sdk: TradingClient
) -> None:
    submit(sdk, market("c-dup"))

    error = api_error(sdk.submit_order, market("c-dup", qty=5))

    assert error.status_code == 422
    assert "client_order_id must be unique" in error.message
    assert list(sandbox.orders) == ["c-dup"]


def test_an_order_without_qty_or_notional_is_refused(sandbox: AlpacaSandbox) -> None:
    body = {"symbol": "AAPL", "side": "buy", "type": "market", "time_in_force": "day"}
    headers = {"APCA-API-KEY-ID": KEY_ID, "APCA-API-SECRET-KEY": SECRET_KEY}

    answer = httpx.post(f"{sandbox.base_url}/v2/orders", json=body, headers=headers)

    assert answer.status_code == 422
    assert sandbox.orders == {}


# --- lookups ----------------------------------------------------------------------------------


def test_an_order_is_found_by_client_order_id_and_by_id(sdk: TradingClient) -> None:
    placed = submit(sdk, market("c-find"))

    by_client_id = sdk.get_order_by_client_id("c-find")
    by_id = sdk.get_order_by_id(placed.id)

    assert isinstance(by_client_id, Order) and isinstance(by_id, Order)
    assert by_client_id.id == by_id.id == placed.id
    assert by_id.client_order_id == "c-find"


def test_unknown_orders_answer_404(sdk: TradingClient) -> None:
    by_client_id = api_error(sdk.get_order_by_client_id, "never-placed")
    by_id = api_error(sdk.get_order_by_id, "00000000-0000-0000-0000-000000000000")

    assert by_client_id.status_code == by_id.status_code == 404


# --- listing ------------------------------------------------------------------------------------


def place_three(sdk: TradingClient, clock: FakeClock) -> list[datetime]:
    """Orders c-a, c-b, c-c submitted one second apart; returns their submission times."""
    times = []
    for coid in ("c-a", "c-b", "c-c"):
        times.append(clock())
        submit(sdk, market(coid))
        clock.advance(1)
    return times


def test_the_listing_defaults_to_open_orders_newest_first(
    sandbox: AlpacaSandbox, sdk: TradingClient, clock: FakeClock
) -> None:
    place_three(sdk, clock)
    sandbox.fill("c-b", "101")

    assert listed(sdk) == ["c-c", "c-a"]
    assert listed(sdk, status=QueryOrderStatus.CLOSED) == ["c-b"]
    assert listed(sdk, status=QueryOrderStatus.ALL) == ["c-c", "c-b", "c-a"]


def test_the_listing_runs_oldest_first_with_direction_asc_and_stops_at_limit(
    sdk: TradingClient, clock: FakeClock
) -> None:
    place_three(sdk, clock)

    assert listed(sdk, status=QueryOrderStatus.ALL, direction=Sort.ASC, limit=2) == ["c-a", "c-b"]
    assert listed(sdk, status=QueryOrderStatus.ALL, direction=Sort.DESC, limit=1) == ["c-c"]


def test_after_and_until_are_exclusive_bounds_on_the_submission_time(
    sdk: TradingClient, clock: FakeClock
) -> None:
    first, second, third = place_three(sdk, clock)

    everything = {"status": QueryOrderStatus.ALL, "direction": Sort.ASC}
    assert listed(sdk, **everything, after=first) == ["c-b", "c-c"]
    assert listed(sdk, **everything, until=third) == ["c-a", "c-b"]
    assert listed(sdk, **everything, after=first, until=third) == ["c-b"]
    assert listed(sdk, **everything, after=first - timedelta(microseconds=1)) == [
        "c-a",
        "c-b",
        "c-c",
    ]
    assert second > first


def test_an_invalid_listing_parameter_is_refused_with_422(sandbox: AlpacaSandbox) -> None:
    headers = {"APCA-API-KEY-ID": KEY_ID, "APCA-API-SECRET-KEY": SECRET_KEY}
    answers = [
        httpx.get(f"{sandbox.base_url}/v2/orders", params=params, headers=headers).status_code
        for params in ({"status": "bogus"}, {"limit": "501"}, {"after": "yesterday"})
    ]

    assert answers == [422, 422, 422]


# --- cancel ---------------------------------------------------------------------------------------


def test_cancel_of_an_open_order_leaves_it_canceled(sdk: TradingClient) -> None:
    placed = submit(sdk, market("c-cancel"))

    sdk.cancel_order_by_id(placed.id)

    found = sdk.get_order_by_id(placed.id)
    assert isinstance(found, Order)
    assert found.status == OrderStatus.CANCELED
    assert found.canceled_at is not None


def test_cancel_of_a_filled_or_canceled_order_is_refused_as_not_cancelable(
    sandbox: AlpacaSandbox, sdk: TradingClient
) -> None:
    filled = submit(sdk, market("c-filled"))
    sandbox.fill("c-filled", "100")
    canceled = submit(sdk, market("c-twice"))
    sdk.cancel_order_by_id(canceled.id)

    refusals = [api_error(sdk.cancel_order_by_id, order.id) for order in (filled, canceled)]

    assert [error.status_code for error in refusals] == [422, 422]
    assert all("not cancelable" in error.message for error in refusals)


def test_cancel_of_an_unknown_order_answers_404(sdk: TradingClient) -> None:
    error = api_error(sdk.cancel_order_by_id, "00000000-0000-0000-0000-000000000000")

    assert error.status_code == 404


# --- account --------------------------------------------------------------------------------------


def test_the_account_reads_through_the_sdk(sdk: TradingClient) -> None:
    account = sdk.get_account()

    assert not isinstance(account, dict)
    assert account.status.value == "ACTIVE"
    assert account.account_number
