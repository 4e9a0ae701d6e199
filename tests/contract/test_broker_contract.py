"""One broker contract, three brokers: the simulated one, Alpaca (sandbox) and the paper broker.

`tests/simulation/sim_broker.py` stands in for a broker in the deterministic-simulation tier; what
it proves holds only where it behaves as the real adapters do. Each test here runs against
`SimBroker`, `AlpacaBroker` on the loopback sandbox (`devtools/alpaca_sandbox.py`, itself pinned to
Alpaca's SDK by `test_alpaca_sdk_sandbox.py`) and `PaperBroker` on the Firestore emulator, and
pins what we rely on: client-order-id dedupe, the comparison of a reused id, lookups, the listing
(every status, oldest first, exclusive bounds, paged past shared timestamps), cancel, and how
faults surface. Fault tests run where faults can be injected (the simulated broker and the sandbox).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest

from devtools import alpaca_sandbox
from devtools.alpaca_sandbox import AlpacaSandbox
from execution.brokers.alpaca import AlpacaBroker
from execution.brokers.base import Broker
from execution.brokers.matching import order_mismatch
from execution.brokers.paper import PaperBroker
from execution.clock import FakeClock
from execution.errors import BrokerRejectedError, BrokerTransientError, OrderNotCancelableError
from execution.firestore.support import CallPolicy
from execution.models import BrokerOrder, OrderRequest
from tests.contract.conftest import T0
from tests.simulation.sim_broker import SimBroker, SimFault
from tests.support.builders import make_order_request

TICK = timedelta(microseconds=1)
PAGE_SIZE = 3
KNOWN_STATUSES = {"accepted", "new", "pending_new", "filled"}
FAULTY = ["sim", "alpaca"]
"""The brokers a test can make fail on demand."""


@dataclass
class World:
    """A broker under test, its clock, and what the test may do to the broker's side."""

    broker: Broker
    clock: FakeClock
    fill: Callable[[str], None]
    fail_next: Callable[[str, str], None] = field(default=lambda op, kind: None)
    """`fail_next("place" | "lookup" | "list", kind)`, kind one of the keys of `sim_world`'s."""
    prefix: str = field(default_factory=lambda: f"c{uuid.uuid4().hex[:8]}-")
    tenant: str = field(default_factory=lambda: f"tenant-{uuid.uuid4().hex[:8]}")

    def request(self, name: str, **overrides: Any) -> OrderRequest:
        fields = {"tenant_id": self.tenant, "client_order_id": self.prefix + name}
        return make_order_request(**{**fields, **overrides})

    def place(self, name: str, **overrides: Any) -> BrokerOrder:
        return self.broker.place_order(self.request(name, **overrides))

    def listed(self, **bounds: Any) -> list[str]:
        """Our client order ids (without prefix) as listed; other tests' paper orders left out."""
        return [
            order.client_order_id.removeprefix(self.prefix)
            for order in self.broker.list_orders(**bounds)
            if order.client_order_id.startswith(self.prefix)
        ]

    def get(self, order_id: str) -> BrokerOrder | None:
        return self.broker.get_order(self.tenant, "acct-1", order_id)

    def cancel(self, order_id: str) -> None:
        self.broker.cancel_order(self.tenant, "acct-1", order_id)


def sim_world(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[World]:
    broker = SimBroker(clock=clock)
    kinds = {
        "5xx": SimFault.SERVER_ERROR,
        "timeout after accept": SimFault.TIMEOUT_AFTER_ACCEPT,
        "garbage after accept": SimFault.GARBAGE_AFTER_ACCEPT,
        "refused": SimFault.REFUSED,
        "keys refused": SimFault.KEYS_REFUSED,
    }
    yield World(
        broker=broker,
        clock=clock,
        fill=lambda coid: broker.fill(coid, 100.5),
        fail_next=lambda op, kind: broker.inject(op, kinds[kind]),
    )


def alpaca_world(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[World]:
    sandbox: AlpacaSandbox = request.getfixturevalue("sandbox")
    faults = {
        "5xx": lambda: alpaca_sandbox.status(503, "service unavailable"),
        # Hung past any read timeout (woken at shutdown): the timed-out call never races it.
        "timeout after accept": lambda: alpaca_sandbox.hang_after_accept(120.0),
        "garbage after accept": alpaca_sandbox.malformed_json_after_accept,
        "refused": lambda: alpaca_sandbox.status(422, "request is invalid"),
        "keys refused": lambda: alpaca_sandbox.status(403, "forbidden"),
    }
    methods = {"place": "POST", "lookup": "GET", "list": "GET"}
    # An ordinary request gets 2 s: a lookup timed out at 0.3 s on a loaded machine.
    timeout = httpx.Timeout(connect=1.0, read=2.0, write=1.0, pool=1.0)
    with httpx.Client() as client:
        broker = AlpacaBroker(
            key_id=alpaca_sandbox.KEY_ID,
            secret_key=alpaca_sandbox.SECRET_KEY,
            base_url=sandbox.base_url,
            client=client,
            timeout=timeout,
            list_page_size=PAGE_SIZE,
        )
        yield World(
            broker=broker,
            clock=clock,
            fill=lambda coid: sandbox.fill(coid, "100.5"),
            fail_next=lambda op, kind: sandbox.inject(methods[op], faults[kind]()),
        )


def paper_world(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[World]:
    db = request.getfixturevalue("db")
    broker = PaperBroker(
        db, clock=clock, policy=CallPolicy(timeout_seconds=30), list_page_size=PAGE_SIZE
    )
    # Paper orders fill as they are placed: there is nothing left to fill.
    yield World(broker=broker, clock=clock, fill=lambda coid: None)


WORLDS = {"sim": sim_world, "alpaca": alpaca_world, "paper": paper_world}


@pytest.fixture(params=sorted(WORLDS))
def world(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[World]:
    yield from WORLDS[request.param](request, clock)


@pytest.fixture(params=FAULTY)
def faulty(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[World]:
    yield from WORLDS[request.param](request, clock)


def raised(call: Callable[[], object], error: type[Exception]) -> Exception:
    with pytest.raises(error) as caught:
        call()
    return caught.value


# --- placing ---------------------------------------------------------------------------------


def test_a_placed_order_is_the_request_as_the_broker_holds_it(world: World) -> None:
    request = world.request("a")

    placed = world.broker.place_order(request)

    assert order_mismatch(request, placed) is None
    assert placed.status in KNOWN_STATUSES
    assert placed.time_in_force == "day"
    assert placed.submitted_at == T0


def test_a_second_place_under_the_same_client_order_id_returns_the_one_order(world: World) -> None:
    first = world.place("a")

    second = world.place("a")

    assert second.broker_order_id == first.broker_order_id
    assert world.listed(after=T0 - TICK) == ["a"]


def test_a_different_order_under_a_used_client_order_id_is_refused(world: World) -> None:
    world.place("a")

    error = raised(lambda: world.place("a", qty=5.0), BrokerRejectedError)

    assert "qty 5 (ours 10)" not in str(error)  # the broker's order is described, not ours
    assert "qty 10 (ours 5)" in str(error)
    assert world.listed(after=T0 - TICK) == ["a"]


def test_a_crypto_pair_placed_twice_is_one_order_however_the_broker_writes_it(
    world: World,
) -> None:
    first = world.place("a", symbol="BTCUSD", qty=0.5)

    second = world.place("a", symbol="BTCUSD", qty=0.5)

    assert second.broker_order_id == first.broker_order_id
    assert first.symbol in {"BTCUSD", "BTC/USD"}


@pytest.mark.parametrize(
    "change",
    [{"limit_price": 101.0}, {"order_type": "market", "limit_price": None}, {"side": "sell"}],
    ids=["limit price", "type", "side"],
)
def test_a_reused_id_with_another_price_type_or_side_is_refused(
    world: World, change: dict[str, Any]
) -> None:
    world.place("a")

    raised(lambda: world.place("a", **change, reference_price=100.0), BrokerRejectedError)

    assert world.listed(after=T0 - TICK) == ["a"]


# --- lookups -----------------------------------------------------------------------------------


def test_an_order_is_found_by_client_order_id_and_by_id(world: World) -> None:
    placed = world.place("a")

    by_client_id = world.broker.get_order_by_client_order_id(
        world.tenant, "acct-1", world.prefix + "a"
    )

    assert by_client_id == placed
    assert world.get(placed.broker_order_id) == placed


def test_unknown_ids_are_none(world: World) -> None:
    by_client_id = world.broker.get_order_by_client_order_id(
        world.tenant, "acct-1", world.prefix + "never"
    )

    assert by_client_id is None
    assert world.get(str(uuid.uuid4())) is None


# --- listing -------------------------------------------------------------------------------------


def test_the_listing_holds_every_status_oldest_first_within_exclusive_bounds(
    world: World,
) -> None:
    for name in ("a", "b", "c"):
        world.place(name)
        world.clock.advance(1)
    world.fill(world.prefix + "b")
    t_a, t_c = T0, T0 + timedelta(seconds=2)

    assert world.listed(after=t_a - TICK) == ["a", "b", "c"]
    assert world.listed(after=t_a) == ["b", "c"]
    assert world.listed(after=t_a - TICK, until=t_c) == ["a", "b"]


def test_the_listing_pages_past_orders_sharing_a_timestamp_each_once(world: World) -> None:
    world.place("a")
    world.clock.advance(1)
    for name in ("b", "c"):
        world.place(name)
    world.clock.advance(1)
    for name in ("d", "e"):
        world.place(name)

    assert world.listed(after=T0 - TICK) == ["a", "b", "c", "d", "e"]


# --- cancel ---------------------------------------------------------------------------------------


def test_cancel_of_a_filled_order_is_not_cancelable(world: World) -> None:
    placed = world.place("a")
    world.fill(world.prefix + "a")

    raised(lambda: world.cancel(placed.broker_order_id), OrderNotCancelableError)

    found = world.get(placed.broker_order_id)
    assert found is not None and found.status == "filled"


def test_cancel_of_an_unknown_order_is_rejected_but_not_as_not_cancelable(world: World) -> None:
    error = raised(lambda: world.cancel(str(uuid.uuid4())), BrokerRejectedError)

    assert not isinstance(error, OrderNotCancelableError)


def test_cancel_of_an_open_order_leaves_it_canceled(faulty: World) -> None:
    placed = faulty.place("a")

    faulty.cancel(placed.broker_order_id)

    found = faulty.get(placed.broker_order_id)
    assert found is not None and found.status == "canceled"
    raised(lambda: faulty.cancel(placed.broker_order_id), OrderNotCancelableError)


# --- faults --------------------------------------------------------------------------------------


def test_a_5xx_before_accepting_is_transient_and_places_nothing(faulty: World) -> None:
    faulty.fail_next("place", "5xx")

    raised(lambda: faulty.place("a"), BrokerTransientError)

    assert faulty.listed(after=T0 - TICK) == []


@pytest.mark.parametrize("fault", ["timeout after accept", "garbage after accept"])
def test_an_answer_lost_after_accepting_is_transient_and_the_retry_returns_the_one_order(
    faulty: World, fault: str
) -> None:
    faulty.fail_next("place", fault)

    raised(lambda: faulty.place("a"), BrokerTransientError)
    retried = faulty.place("a")

    assert faulty.listed(after=T0 - TICK) == ["a"]
    assert retried.client_order_id == faulty.prefix + "a"


def test_a_refused_lookup_is_a_rejection(faulty: World) -> None:
    faulty.fail_next("lookup", "refused")

    raised(
        lambda: faulty.broker.get_order_by_client_order_id(faulty.tenant, "acct-1", "x"),
        BrokerRejectedError,
    )


@pytest.mark.parametrize("operation", ["place", "lookup"])
def test_refused_keys_are_transient_never_a_rejection(faulty: World, operation: str) -> None:
    faulty.fail_next(operation, "keys refused")

    raised(
        lambda: (
            faulty.broker.get_order_by_client_order_id(faulty.tenant, "acct-1", "x")
            if operation == "lookup"
            else faulty.place("k")
        ),
        BrokerTransientError,
    )


def test_a_listing_that_fails_is_transient_never_a_short_list(faulty: World) -> None:
    faulty.place("a")
    faulty.fail_next("list", "5xx")

    raised(lambda: faulty.listed(after=T0 - TICK), BrokerTransientError)
