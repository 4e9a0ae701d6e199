"""Every Alpaca call has an overall deadline: connect + send + the whole answer, not each read.

A broker that trickles its answer a byte at a time, each byte well inside the read timeout, once
held a call for as long as it kept sending (4.3 s with a 0.3 s timeout). Here a real loopback
server trickles (`tests/support/wire_server.py`) and the call must end as outcome unknown, with
the connection closed while the server still had bytes to send. No assertion on elapsed time:
the server's record of the hang-up is the evidence.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from devtools.alpaca_sandbox import KEY_ID, SECRET_KEY, AlpacaSandbox
from execution.brokers.alpaca import AlpacaBroker
from execution.brokers.deadline import MAX_ANSWER_BYTES
from execution.errors import BrokerTransientError
from execution.models import OrderRequest
from tests.support.wire_server import Trickle, WireServer, http_answer

ORDER = OrderRequest(
    tenant_id="tenant-a",
    broker_account_id="acct-1",
    client_order_id="intent-1",
    symbol="AAPL",
    side="buy",
    qty=1.0,
    order_type="limit",
    limit_price=100.0,
    time_in_force="day",
)
DEADLINE_S = 0.5
# Each byte comes well inside the read timeout: only an overall deadline can end the call.
PER_READ = httpx.Timeout(2.0)
TRICKLE_INTERVAL_S = 0.05
ORDER_BODY = json.dumps(
    {
        "id": "8f0e7a56-1d47-4d63-9d0c-0d1b0c7b5c11",
        "client_order_id": "intent-1",
        "symbol": "AAPL",
        "side": "buy",
        "qty": "1",
        "status": "accepted",
        "type": "limit",
        "limit_price": "100",
        "time_in_force": "day",
        "filled_avg_price": None,
        "padding": "x" * 400,  # 20+ s of trickle at one byte per 50 ms
    }
).encode()
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(
    ORDER_BODY
)


@pytest.fixture
def server() -> Iterator[WireServer]:
    with WireServer() as wire:
        yield wire


def broker_at(url: str, client: httpx.Client | None = None) -> AlpacaBroker:
    return AlpacaBroker(
        key_id=KEY_ID,
        secret_key=SECRET_KEY,
        base_url=url,
        client=client,
        timeout=PER_READ,
        deadline_seconds=DEADLINE_S,
    )


def place_expecting_transient(broker: AlpacaBroker) -> BrokerTransientError:
    with pytest.raises(BrokerTransientError) as raised:
        broker.place_order(ORDER)
    return raised.value


def assert_hung_up_mid_answer(trickle: Trickle) -> None:
    assert trickle.finished.wait(60), "the server is still trickling: nobody hung up"
    assert trickle.client_closed_early.is_set()
    assert trickle.sent < len(trickle.raw)


def test_a_body_trickled_a_byte_at_a_time_ends_as_transient_and_the_connection_is_closed(
    server: WireServer,
) -> None:
    trickle = Trickle(ORDER_BODY, TRICKLE_INTERVAL_S, prefix=HEAD)
    server.script(trickle)

    error = place_expecting_transient(broker_at(server.base_url))

    assert "outcome unknown" in str(error)
    assert_hung_up_mid_answer(trickle)


def test_a_trickled_status_line_and_headers_are_bounded_by_the_same_deadline(
    server: WireServer,
) -> None:
    trickle = Trickle(HEAD + ORDER_BODY, TRICKLE_INTERVAL_S)
    server.script(trickle)

    place_expecting_transient(broker_at(server.base_url))

    assert_hung_up_mid_answer(trickle)


def test_an_injected_client_still_stops_reading_a_trickled_body_at_the_deadline(
    server: WireServer,
) -> None:
    trickle = Trickle(ORDER_BODY, TRICKLE_INTERVAL_S, prefix=HEAD)
    server.script(trickle)

    with httpx.Client() as injected:
        place_expecting_transient(broker_at(server.base_url, injected))

    assert_hung_up_mid_answer(trickle)


def test_an_answer_larger_than_any_order_is_transient(server: WireServer) -> None:
    server.script(http_answer(b"HTTP/1.1 200 OK", b" " * (MAX_ANSWER_BYTES + 1)))

    error = place_expecting_transient(broker_at(server.base_url))

    assert "AnswerTooLarge" in str(error)


def test_a_prompt_answer_is_read_whole_through_the_deadline_transport(server: WireServer) -> None:
    server.script(http_answer(b"HTTP/1.1 200 OK", ORDER_BODY, b"Content-Type: application/json"))

    placed = broker_at(server.base_url).place_order(ORDER)

    assert (placed.client_order_id, placed.status) == ("intent-1", "accepted")


def test_the_broker_built_from_its_own_client_places_and_finds_orders_at_the_sandbox() -> None:
    with AlpacaSandbox() as alpaca:
        broker = broker_at(alpaca.base_url)

        placed = broker.place_order(ORDER)
        found = broker.get_order_by_client_order_id("tenant-a", "acct-1", "intent-1")
        broker.close()

    assert found == placed
