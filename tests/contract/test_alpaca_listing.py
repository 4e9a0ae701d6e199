"""`AlpacaBroker.list_orders` and `get_order` on the wire: what they ask Alpaca and how they page.

Alpaca's listing pages by time (`after` is exclusive, `limit` ≤ 500), not by cursor. These tests
pin the request the reconciler's listing sends, that paging never skips an order sharing the last
timestamp of a page (`tests/contract/test_broker_contract.py` lists such ties across pages), and
that an incomplete or unreadable listing is an error, never a short list.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from devtools.alpaca_sandbox import KEY_ID, SECRET_KEY, AlpacaSandbox, malformed_json_after_accept
from execution.brokers.alpaca import AlpacaBroker
from execution.clock import FakeClock
from execution.errors import BrokerTransientError
from execution.models import BrokerOrder
from tests.contract.conftest import T0
from tests.support.builders import make_order_request

PAGE_SIZE = 2


@pytest.fixture
def broker(sandbox: AlpacaSandbox) -> Iterator[AlpacaBroker]:
    built = AlpacaBroker(
        key_id=KEY_ID, secret_key=SECRET_KEY, base_url=sandbox.base_url, list_page_size=PAGE_SIZE
    )
    yield built
    built.close()


def place(broker: AlpacaBroker, coid: str) -> None:
    broker.place_order(make_order_request(client_order_id=coid))


def listing_queries(sandbox: AlpacaSandbox) -> list[dict[str, list[str]]]:
    return [s.query for s in sandbox.seen if s.method == "GET" and s.path == "/v2/orders"]


def test_the_listing_asks_for_every_status_oldest_first_a_page_at_a_time(
    broker: AlpacaBroker, sandbox: AlpacaSandbox
) -> None:
    list(broker.list_orders(after=T0, until=T0 + timedelta(hours=1)))

    [query] = listing_queries(sandbox)
    assert query == {
        "status": ["all"],
        "direction": ["asc"],
        "limit": [str(PAGE_SIZE)],
        "after": ["2026-01-05T14:30:00.000000Z"],
        "until": ["2026-01-05T15:30:00.000000Z"],
    }


def test_each_next_page_starts_a_microsecond_before_the_last_order_seen(
    broker: AlpacaBroker, sandbox: AlpacaSandbox, clock: FakeClock
) -> None:
    for coid in ("a", "b", "c"):
        clock.advance(1)
        place(broker, coid)

    listed = [order.client_order_id for order in broker.list_orders(after=T0)]

    assert listed == ["a", "b", "c"]
    afters = [query["after"][0] for query in listing_queries(sandbox)]
    assert afters == [
        "2026-01-05T14:30:00.000000Z",
        "2026-01-05T14:30:01.999999Z",  # b again, then c
        "2026-01-05T14:30:02.999999Z",  # c again: a short page, the end
    ]


def test_more_orders_on_one_timestamp_than_a_page_holds_is_an_error_not_a_short_listing(
    broker: AlpacaBroker,
) -> None:
    for coid in ("a", "b", "c"):
        place(broker, coid)
    listed: list[str] = []

    with pytest.raises(BrokerTransientError):
        listed.extend(o.client_order_id for o in broker.list_orders(after=T0 - timedelta(1)))

    assert listed == ["a", "b"]


def test_an_unreadable_listing_is_transient(broker: AlpacaBroker, sandbox: AlpacaSandbox) -> None:
    sandbox.inject("GET", malformed_json_after_accept())

    with pytest.raises(BrokerTransientError):
        list(broker.list_orders(after=T0))


def test_naive_listing_bounds_are_refused(broker: AlpacaBroker) -> None:
    with pytest.raises(ValueError):
        list(broker.list_orders(after=datetime(2026, 1, 5)))


def order_json(**overrides: Any) -> dict[str, Any]:
    """An order as Alpaca writes it: decimals as strings, nanosecond timestamps."""
    return {
        "id": "o-1",
        "client_order_id": "c-1",
        "symbol": "BTC/USD",
        "side": "buy",
        "qty": 0.5,
        "type": "limit",
        "limit_price": "100.5",
        "time_in_force": "gtc",
        "status": "new",
        "submitted_at": "2026-01-05T14:30:00.123456789Z",
        **overrides,
    }


def get_order_answered(order: dict[str, Any]) -> BrokerOrder | None:
    """`get_order` where Alpaca answers 200 with `order`."""
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=order))
    with httpx.Client(transport=transport) as client:
        broker = AlpacaBroker(
            key_id=KEY_ID, secret_key=SECRET_KEY, base_url="http://127.0.0.1:1", client=client
        )
        return broker.get_order("tenant-a", "acct-1", "o-1")


@pytest.mark.parametrize("qty", ["NaN", "Infinity", "-1"])
def test_an_order_with_a_non_finite_or_negative_amount_is_unreadable(qty: str) -> None:
    with pytest.raises(BrokerTransientError):
        get_order_answered(order_json(qty=qty))


def test_alpacas_nanosecond_timestamps_read_as_aware_utc() -> None:
    found = get_order_answered(order_json())

    assert found is not None
    assert found.submitted_at == datetime(2026, 1, 5, 14, 30, 0, 123456, tzinfo=UTC)
    assert (found.qty, found.limit_price, found.order_type) == (0.5, 100.5, "limit")
