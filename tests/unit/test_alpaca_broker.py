"""`AlpacaBroker` against a real HTTP server on loopback (`devtools/alpaca_sandbox.py`).

No mocks of httpx: every fault is something the server really does on the wire (hang after taking
the order, 5xx, 429, 403, duplicate 422, malformed JSON, dropped connection). The invariant under
test is the project's: whatever the fault, at most one order exists at the broker, and "outcome
unknown" is a retryable error that the retry resolves through the same client order id.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, cast

import httpx
import pytest

from devtools.alpaca_sandbox import (
    KEY_ID,
    SECRET_KEY,
    AlpacaSandbox,
    Fault,
    drop_after_accept,
    hang_after_accept,
    malformed_json_after_accept,
    status,
)
from execution import bootstrap as bootstrap_module
from execution.brokers.alpaca import AlpacaBroker
from execution.clock import system_clock
from execution.errors import (
    BrokerRejectedError,
    BrokerTransientError,
    RetryableError,
    SettingsError,
)
from execution.firestore.support import CallPolicy
from execution.models import BrokerOrder, OrderRequest, Outcome
from execution.settings import ALPACA_PAPER_URL, AgentMode, Settings
from tests.support.builders import make_order_request
from tests.unit.fakes import client_order_id_of, make_engine, make_intent

# Long enough for a loaded machine to answer an ordinary request (0.3 s timed out a lookup at
# load 9), and far below a hang: the sandbox wakes a hanging handler at shutdown, so the hang
# costs nothing after the client gave up.
READ_TIMEOUT_S = 2.0
TEST_TIMEOUT = httpx.Timeout(connect=5.0, read=READ_TIMEOUT_S, write=5.0, pool=5.0)
HANG_S = 120.0


def hang() -> Fault:
    """The sandbox takes the order, then answers long after any client gave up."""
    return hang_after_accept(HANG_S)


OUTCOME_UNKNOWN_FAULTS: dict[str, Callable[[], Fault]] = {
    "read timeout after accept": hang,
    "malformed JSON after accept": malformed_json_after_accept,
    "connection dropped after accept": drop_after_accept,
    "503 after accept": lambda: status(503, "upstream unavailable", accept=True),
}


@pytest.fixture
def alpaca() -> Iterator[AlpacaSandbox]:
    with AlpacaSandbox() as server:
        yield server


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client() as http:
        yield http


@pytest.fixture
def broker(alpaca: AlpacaSandbox, client: httpx.Client) -> AlpacaBroker:
    return AlpacaBroker(
        key_id=KEY_ID,
        secret_key=SECRET_KEY,
        base_url=alpaca.base_url,
        client=client,
        timeout=TEST_TIMEOUT,
    )


def order_request(**overrides: Any) -> OrderRequest:
    """A limit buy of 10 AAPL at 100.5 under client order id `intent-1`."""
    return make_order_request(**overrides)


def closed_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def place_expecting(broker: AlpacaBroker, order: OrderRequest, error: type[Exception]) -> Exception:
    """Place `order` and return the `error` it raised (asserts stay outside `pytest.raises`)."""
    with pytest.raises(error) as caught:
        broker.place_order(order)
    return caught.value


# --- the happy path ------------------------------------------------------------------------


def test_an_order_is_placed_and_returned_as_alpaca_knows_it(
    broker: AlpacaBroker, alpaca: AlpacaSandbox
) -> None:
    placed = broker.place_order(order_request())

    stored = alpaca.orders["intent-1"]
    assert placed == BrokerOrder(
        broker_order_id=stored["id"],
        client_order_id="intent-1",
        symbol="AAPL",
        side="buy",
        qty=10.0,
        status="accepted",
        filled_avg_price=None,
        order_type="limit",
        limit_price=100.5,
        time_in_force="day",
        submitted_at=datetime.fromisoformat(stored["submitted_at"]),
        filled_qty=0.0,
    )


def test_the_order_is_sent_with_alpacas_field_names_and_decimals_as_strings(
    broker: AlpacaBroker, alpaca: AlpacaSandbox
) -> None:
    broker.place_order(order_request())

    [post] = [seen for seen in alpaca.seen if seen.method == "POST"]
    assert post.body == {
        "symbol": "AAPL",
        "qty": "10",
        "side": "buy",
        "type": "limit",
        "time_in_force": "day",
        "limit_price": "100.5",
        "client_order_id": "intent-1",
    }


def test_every_request_carries_both_key_headers(
    broker: AlpacaBroker, alpaca: AlpacaSandbox
) -> None:
    placed = broker.place_order(order_request())
    broker.get_order_by_client_order_id("tenant-a", "acct-1", "intent-1")
    broker.cancel_order("tenant-a", "acct-1", placed.broker_order_id)

    assert [
        (s.headers["apca-api-key-id"], s.headers["apca-api-secret-key"]) for s in alpaca.seen
    ] == [(KEY_ID, SECRET_KEY)] * 3


def test_a_market_order_is_sent_without_a_limit_price(
    broker: AlpacaBroker, alpaca: AlpacaSandbox
) -> None:
    broker.place_order(order_request(order_type="market", limit_price=None, qty=0.25))

    [post] = [seen for seen in alpaca.seen if seen.method == "POST"]
    assert post.body is not None
    assert "limit_price" not in post.body
    assert (post.body["type"], post.body["qty"]) == ("market", "0.25")


def test_placing_the_same_client_order_id_again_returns_the_existing_order(
    broker: AlpacaBroker, alpaca: AlpacaSandbox
) -> None:
    first = broker.place_order(order_request())

    again = broker.place_order(order_request())

    assert again == first
    assert len(alpaca.orders) == 1


def test_two_concurrent_placements_of_one_order_make_one_order_and_both_get_it(
    broker: AlpacaBroker, alpaca: AlpacaSandbox
) -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda _: broker.place_order(order_request()), range(2)))

    assert results[0] == results[1]
    assert len(alpaca.orders) == 1


# --- outcome unknown: transient, and the retry resolves it ---------------------------------


@pytest.mark.parametrize("fault", OUTCOME_UNKNOWN_FAULTS.values(), ids=OUTCOME_UNKNOWN_FAULTS)
def test_a_fault_after_alpaca_took_the_order_is_transient_with_one_order_at_alpaca(
    broker: AlpacaBroker, alpaca: AlpacaSandbox, fault: Callable[[], Fault]
) -> None:
    alpaca.inject("POST", fault())

    place_expecting(broker, order_request(), BrokerTransientError)

    assert list(alpaca.wait_for_orders(1)) == ["intent-1"]


@pytest.mark.parametrize("fault", OUTCOME_UNKNOWN_FAULTS.values(), ids=OUTCOME_UNKNOWN_FAULTS)
def test_the_retry_after_an_unknown_outcome_returns_the_order_alpaca_took(
    broker: AlpacaBroker, alpaca: AlpacaSandbox, fault: Callable[[], Fault]
) -> None:
    alpaca.inject("POST", fault())
    place_expecting(broker, order_request(), BrokerTransientError)

    retried = broker.place_order(order_request())

    assert list(alpaca.orders) == ["intent-1"]
    assert retried.broker_order_id == alpaca.orders["intent-1"]["id"]
    # The retry reused the intent's id: no invented client order id reached the broker.
    assert alpaca.posted_client_order_ids() == ["intent-1", "intent-1"]


def test_the_broker_timeout_holds_even_when_the_injected_client_has_none(
    alpaca: AlpacaSandbox,
) -> None:
    alpaca.inject("POST", hang())
    with httpx.Client(timeout=None) as unbounded:
        broker = AlpacaBroker(
            key_id=KEY_ID,
            secret_key=SECRET_KEY,
            base_url=alpaca.base_url,
            client=unbounded,
            timeout=TEST_TIMEOUT,
        )
        # Without the broker's own timeout the server's answer, after its hang, would be a
        # success: only a timed-out call is transient.
        place_expecting(broker, order_request(), BrokerTransientError)


def test_a_refused_connection_is_transient(client: httpx.Client) -> None:
    broker = AlpacaBroker(
        key_id=KEY_ID,
        secret_key=SECRET_KEY,
        base_url=f"http://127.0.0.1:{closed_loopback_port()}",
        client=client,
        timeout=TEST_TIMEOUT,
    )

    error = place_expecting(broker, order_request(), BrokerTransientError)

    assert isinstance(error.__cause__, httpx.ConnectError)


# --- answers that place nothing ------------------------------------------------------------


@pytest.mark.parametrize("code", [429, 500, 503])
def test_a_busy_or_failing_alpaca_is_transient_and_places_no_order(
    broker: AlpacaBroker, alpaca: AlpacaSandbox, code: int
) -> None:
    alpaca.inject("POST", status(code, "try again later"))

    error = place_expecting(broker, order_request(), BrokerTransientError)

    assert isinstance(error, RetryableError)
    assert alpaca.orders == {}


def test_a_403_is_a_rejection_that_carries_alpacas_message(
    broker: AlpacaBroker, alpaca: AlpacaSandbox
) -> None:
    alpaca.inject("POST", status(403, "insufficient buying power"))

    error = place_expecting(broker, order_request(), BrokerRejectedError)

    assert "403" in str(error)
    assert "insufficient buying power" in str(error)
    assert alpaca.orders == {}


def test_an_invalid_order_is_rejected_with_alpacas_422_message(
    broker: AlpacaBroker, alpaca: AlpacaSandbox
) -> None:
    error = place_expecting(broker, order_request(time_in_force="forever"), BrokerRejectedError)

    assert "invalid time_in_force" in str(error)
    assert alpaca.orders == {}


def test_wrong_keys_are_retried_not_rejected_and_place_no_order(
    alpaca: AlpacaSandbox, client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    broker = AlpacaBroker(
        key_id=KEY_ID,
        secret_key="not-the-secret",
        base_url=alpaca.base_url,
        client=client,
        timeout=TEST_TIMEOUT,
    )

    with caplog.at_level(logging.ERROR):
        error = place_expecting(broker, order_request(), BrokerTransientError)

    assert "401" in str(error)
    assert alpaca.orders == {}
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        "exec.broker.alpaca.keys_refused"
    ]


def test_a_bare_403_refuses_the_keys_and_is_retried(
    broker: AlpacaBroker, alpaca: AlpacaSandbox
) -> None:
    alpaca.inject("POST", status(403, "forbidden"))

    place_expecting(broker, order_request(), BrokerTransientError)

    assert alpaca.orders == {}


# --- duplicates ----------------------------------------------------------------------------


def test_a_duplicate_answer_for_an_order_not_yet_visible_is_transient(
    broker: AlpacaBroker, alpaca: AlpacaSandbox
) -> None:
    alpaca.inject("POST", status(422, "client_order_id must be unique"))

    place_expecting(broker, order_request(), BrokerTransientError)

    assert alpaca.orders == {}


def test_a_409_conflict_is_resolved_by_looking_the_order_up(
    broker: AlpacaBroker, alpaca: AlpacaSandbox
) -> None:
    first = broker.place_order(order_request())
    alpaca.inject("POST", status(409, "conflict"))

    again = broker.place_order(order_request())

    assert again == first


def test_a_failing_lookup_after_a_duplicate_answer_is_transient_not_a_rejection(
    broker: AlpacaBroker, alpaca: AlpacaSandbox
) -> None:
    broker.place_order(order_request())
    alpaca.inject("GET", status(403, "forbidden"))

    place_expecting(broker, order_request(), BrokerTransientError)

    assert len(alpaca.orders) == 1


def test_a_different_order_already_under_our_client_order_id_is_rejected(
    broker: AlpacaBroker, alpaca: AlpacaSandbox
) -> None:
    broker.place_order(order_request(qty=10.0))

    error = place_expecting(broker, order_request(qty=5.0), BrokerRejectedError)

    assert "different order" in str(error)
    assert alpaca.orders["intent-1"]["qty"] == "10"


# --- lookups and cancels -------------------------------------------------------------------


def test_looking_up_an_unknown_client_order_id_returns_none(broker: AlpacaBroker) -> None:
    assert broker.get_order_by_client_order_id("tenant-a", "acct-1", "never-placed") is None


def test_a_looked_up_filled_order_carries_its_average_fill_price(
    broker: AlpacaBroker, alpaca: AlpacaSandbox
) -> None:
    broker.place_order(order_request())
    alpaca.fill("intent-1", "100.25")

    found = broker.get_order_by_client_order_id("tenant-a", "acct-1", "intent-1")

    assert found is not None
    assert (found.status, found.filled_avg_price) == ("filled", 100.25)


def test_a_lookup_that_times_out_is_transient(broker: AlpacaBroker, alpaca: AlpacaSandbox) -> None:
    alpaca.inject("GET", Fault(hang_seconds=3.0))

    with pytest.raises(BrokerTransientError):
        broker.get_order_by_client_order_id("tenant-a", "acct-1", "intent-1")


def test_cancel_asks_alpaca_to_cancel_the_order(
    broker: AlpacaBroker, alpaca: AlpacaSandbox
) -> None:
    placed = broker.place_order(order_request())

    broker.cancel_order("tenant-a", "acct-1", placed.broker_order_id)

    assert alpaca.orders["intent-1"]["status"] == "canceled"


def test_cancelling_an_unknown_order_is_rejected(broker: AlpacaBroker) -> None:
    with pytest.raises(BrokerRejectedError) as caught:
        broker.cancel_order("tenant-a", "acct-1", "00000000-0000-0000-0000-000000000000")

    assert "order not found" in str(caught.value)


def test_cancelling_a_filled_order_is_rejected_as_not_cancelable(
    broker: AlpacaBroker, alpaca: AlpacaSandbox
) -> None:
    placed = broker.place_order(order_request())
    alpaca.fill("intent-1", "100.5")

    with pytest.raises(BrokerRejectedError) as caught:
        broker.cancel_order("tenant-a", "acct-1", placed.broker_order_id)

    assert "not cancelable" in str(caught.value)


def test_a_cancel_that_times_out_is_transient(broker: AlpacaBroker, alpaca: AlpacaSandbox) -> None:
    placed = broker.place_order(order_request())
    alpaca.inject("DELETE", hang())

    with pytest.raises(BrokerTransientError):
        broker.cancel_order("tenant-a", "acct-1", placed.broker_order_id)


# --- keys ----------------------------------------------------------------------------------


def provoke_every_failure(broker: AlpacaBroker, alpaca: AlpacaSandbox) -> list[BaseException]:
    """Run the broker through each fault (one echoing the secret back); return the errors."""
    alpaca.inject(
        "POST",
        hang(),
        malformed_json_after_accept(),
        drop_after_accept(),
        status(503, "unavailable"),
        status(429, "rate limit exceeded"),
        status(403, f"key {KEY_ID} with secret {SECRET_KEY} is forbidden"),
    )
    errors: list[BaseException] = []
    for n in range(7):
        try:
            broker.place_order(order_request(client_order_id=f"intent-{n}"))
        except (BrokerTransientError, BrokerRejectedError) as exc:
            errors.append(exc)
    broker.place_order(order_request(client_order_id="intent-0"))  # a resolved duplicate
    return errors


def chain(error: BaseException) -> Iterator[BaseException]:
    current: BaseException | None = error
    while current is not None:
        yield current
        current = current.__cause__ or current.__context__


def test_keys_never_appear_in_log_records(
    broker: AlpacaBroker,
    alpaca: AlpacaSandbox,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # main.configure_logging stops `execution` records at its own handler; capture them anyway.
    monkeypatch.setattr(logging.getLogger("execution"), "propagate", True)
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="execution")

    provoke_every_failure(broker, alpaca)

    assert {r.name.split(".")[0] for r in caplog.records} >= {"execution", "httpx", "httpcore"}
    for record in caplog.records:
        text = f"{record.getMessage()} {record.__dict__!r}"
        assert KEY_ID not in text
        assert SECRET_KEY not in text


def test_keys_never_appear_in_exception_messages(
    broker: AlpacaBroker, alpaca: AlpacaSandbox
) -> None:
    errors = provoke_every_failure(broker, alpaca)

    assert len(errors) == 6
    for error in errors:
        for link in chain(error):
            assert KEY_ID not in str(link)
            assert SECRET_KEY not in str(link)


def test_the_brokers_repr_shows_no_key(broker: AlpacaBroker) -> None:
    assert SECRET_KEY not in repr(broker)
    assert KEY_ID not in repr(broker)


# --- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base_url", "paper"),
    [
        ("https://paper-api.alpaca.markets", True),
        ("https://paper-api.alpaca.markets/v2/", True),
        ("https://api.alpaca.markets", False),
        ("http://127.0.0.1:8080", False),
    ],
)
def test_only_alpacas_paper_endpoint_counts_as_paper(
    client: httpx.Client, base_url: str, paper: bool
) -> None:
    broker = AlpacaBroker(key_id=KEY_ID, secret_key=SECRET_KEY, base_url=base_url, client=client)

    assert broker.is_paper is paper


def test_a_plain_http_base_url_off_loopback_is_refused(client: httpx.Client) -> None:
    with pytest.raises(SettingsError):
        AlpacaBroker(
            key_id=KEY_ID,
            secret_key=SECRET_KEY,
            base_url="http://api.alpaca.markets",
            client=client,
        )


def test_bootstrap_builds_an_alpaca_broker_when_settings_choose_alpaca() -> None:
    settings = Settings(
        broker="alpaca",
        alpaca_key_id=KEY_ID,
        alpaca_secret_key=SECRET_KEY,
        alpaca_base_url=ALPACA_PAPER_URL,
        agent_mode=AgentMode.PAPER,
    )
    # The Alpaca branch never touches the document store, so none is given.
    store = cast(Any, None)

    broker = bootstrap_module._broker(
        settings, store, system_clock, CallPolicy(timeout_seconds=1.0)
    )

    assert isinstance(broker, AlpacaBroker)
    assert broker.is_paper
    broker.close()


# --- through the engine --------------------------------------------------------------------


def test_the_engine_retries_a_timed_out_placement_into_the_one_order_alpaca_took(
    broker: AlpacaBroker, alpaca: AlpacaSandbox
) -> None:
    rig = make_engine(broker=broker)
    alpaca.inject("POST", hang())
    with pytest.raises(BrokerTransientError):
        rig.engine.execute_intent(make_intent())

    redelivered = rig.engine.execute_intent(make_intent())

    assert redelivered.outcome is Outcome.PLACED
    assert redelivered.broker_order_id == alpaca.orders[client_order_id_of(make_intent())]["id"]
    assert [outcome for _, outcome, _, _ in rig.manager.releases] == [
        Outcome.EXCEPTION,
        Outcome.PLACED,
    ]


def test_the_engine_records_an_alpaca_refusal_as_rejected_with_its_message(
    broker: AlpacaBroker, alpaca: AlpacaSandbox
) -> None:
    rig = make_engine(broker=broker)
    alpaca.inject("POST", status(403, "insufficient buying power"))

    result = rig.engine.execute_intent(make_intent())

    assert result.outcome is Outcome.REJECTED
    assert result.reason is not None
    assert "insufficient buying power" in result.reason
    assert alpaca.orders == {}


def test_the_sandbox_can_queue_faults_ahead_of_those_already_queued(
    alpaca: AlpacaSandbox, broker: AlpacaBroker
) -> None:
    later, first, second = status(503, "later"), drop_after_accept(), status(500, "second")
    alpaca.inject("POST", later)

    alpaca.inject_next("POST", first, second)

    assert alpaca.queued("POST") == [first, second, later]
    with pytest.raises(BrokerTransientError):
        broker.place_order(order_request())
    assert alpaca.queued("POST") == [second, later]


def test_a_lookup_of_an_unknown_client_order_id_is_none(broker: AlpacaBroker) -> None:
    assert broker.get_order_by_client_order_id("tenant-a", "acct-1", "ex1-unknown") is None


def test_a_404_that_is_not_alpacas_order_not_found_is_an_error_not_none(
    broker: AlpacaBroker, alpaca: AlpacaSandbox
) -> None:
    alpaca.inject("GET", status(404, "endpoint not found"))

    # No such endpoint: APCA_API_BASE_URL is wrong, an outage to retry, never an answer.
    with pytest.raises(BrokerTransientError):
        broker.get_order_by_client_order_id("tenant-a", "acct-1", "ex1-unknown")
