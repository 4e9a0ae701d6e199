"""`kill-switch on --cancel-open` against the Alpaca sandbox and the Firestore emulator.

Orders are placed at the sandbox as the engine would place them (our client order ids, for
several tenants and accounts, one hashed and located through its reservation, one foreign);
the command then halts a scope and must cancel exactly the open orders of ours in it, report
each, and be safe to run again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from google.cloud import firestore
from typer.testing import Result

from devtools.alpaca_sandbox import AlpacaSandbox, status
from execution.brokers.alpaca import AlpacaBroker
from execution.cli.context import EXIT_PROBLEMS
from execution.client_order_ids import HASHED_PREFIX, client_order_id_for
from tests.support.builders import make_order_request, unique
from tests.support.cli import alpaca_cli


@pytest.fixture
def cli(
    firestore_emulator_host: str, firestore_project: str, alpaca: AlpacaSandbox
) -> Callable[..., Result]:
    """The command line with the function's broker settings pointing at the sandbox."""
    return alpaca_cli(firestore_project, alpaca.base_url)


class Book:
    """Orders at the sandbox, by a short name, with their client order ids."""

    def __init__(self, broker: AlpacaBroker, db: firestore.Client) -> None:
        self.tenant, self.other_tenant = unique("tenant"), unique("tenant")
        self.ids: dict[str, str] = {}
        self._broker, self._db = broker, db

    def place(self, name: str, tenant: str, account: str, intent: str | None = None) -> str:
        client_order_id = client_order_id_for(tenant, account, intent or unique("intent"))
        self.place_raw(name, client_order_id, tenant, account)
        return client_order_id

    def place_raw(self, name: str, client_order_id: str, tenant: str, account: str) -> None:
        self._broker.place_order(
            make_order_request(
                tenant_id=tenant, broker_account_id=account, client_order_id=client_order_id
            )
        )
        self.ids[name] = client_order_id

    def record(self, tenant: str, account: str, intent: str) -> None:
        """The reservation an execution of `intent` left: it carries the client order id."""
        self._db.collection("tenants", tenant, "execution_reservations").document(intent).set(
            {
                "tenant_id": tenant,
                "broker_account_id": account,
                "client_intent_id": intent,
                "client_order_id": client_order_id_for(tenant, account, intent),
                "status": "released",
                "outcome": "placed",
            }
        )


@pytest.fixture
def book(alpaca_broker: AlpacaBroker, db: firestore.Client) -> Book:
    orders = Book(alpaca_broker, db)
    orders.place("tenant acct-1", orders.tenant, "acct-1")
    orders.place("tenant acct-2", orders.tenant, "acct-2")
    orders.place("other tenant", orders.other_tenant, "acct-1")
    long_intent = "i" * 120  # too long for the plain form: the id is hashed
    orders.record(orders.tenant, "acct-1", long_intent)
    assert orders.place("tenant hashed", orders.tenant, "acct-1", long_intent).startswith(
        HASHED_PREFIX
    )
    orders.place_raw("foreign", "placed-by-hand-1", orders.tenant, "acct-1")
    return orders


def statuses(alpaca: AlpacaSandbox, book: Book) -> dict[str, str]:
    orders = alpaca.orders
    return {name: orders[coid]["status"] for name, coid in book.ids.items()}


def answer(result: Result) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded


def test_a_tenant_halt_cancels_that_tenants_open_orders_only(
    cli: Callable[..., Result], alpaca: AlpacaSandbox, book: Book, db: firestore.Client
) -> None:
    result = cli(
        "kill-switch", "on", "--tenant", book.tenant, "--reason", "drill", "--cancel-open", "--json"
    )

    assert result.exit_code == 0, result.output
    assert statuses(alpaca, book) == {
        "tenant acct-1": "canceled",
        "tenant acct-2": "canceled",
        "tenant hashed": "canceled",
        "other tenant": "accepted",
        "foreign": "accepted",
    }
    report = answer(result)["cancel_open"]
    assert sorted(c["client_order_id"] for c in report["cancels"]) == sorted(
        book.ids[n] for n in ("tenant acct-1", "tenant acct-2", "tenant hashed")
    )
    assert {c["result"] for c in report["cancels"]} == {"cancel_requested"}
    switch = db.collection("tenants", book.tenant, "ops").document("execution_kill_switch").get()
    assert (switch.to_dict() or {})["enabled"] is True


def test_running_it_again_cancels_nothing_more_and_succeeds(
    cli: Callable[..., Result], alpaca: AlpacaSandbox, book: Book
) -> None:
    args = ("kill-switch", "on", "--tenant", book.tenant, "--reason", "drill", "--cancel-open")
    first = cli(*args, "--json")

    again = cli(*args, "--json")

    assert (first.exit_code, again.exit_code) == (0, 0), first.output + again.output
    assert answer(again)["cancel_open"]["cancels"] == []
    assert [s.method for s in alpaca.seen].count("DELETE") == 3


def test_an_account_halt_cancels_that_accounts_orders_and_turns_its_trading_mode_off(
    cli: Callable[..., Result], alpaca: AlpacaSandbox, book: Book, db: firestore.Client
) -> None:
    result = cli(
        "kill-switch",
        "on",
        "--tenant",
        book.tenant,
        "--account",
        "acct-2",
        "--reason",
        "acct drill",
        "--cancel-open",
        "--json",
    )

    assert result.exit_code == 0, result.output
    assert statuses(alpaca, book)["tenant acct-2"] == "canceled"
    assert {n for n, s in statuses(alpaca, book).items() if s == "canceled"} == {"tenant acct-2"}
    account = db.collection("tenants", book.tenant, "accounts").document("acct-2").get()
    assert (account.to_dict() or {})["trading_mode"] == "OFF"


def test_turning_an_account_off_and_on_again_restores_its_own_trading_mode(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    tenant = unique("tenant")
    account = db.collection("tenants", tenant, "accounts").document("acct-1")
    account.set({"trading_mode": "PAPER", "max_inflight_usd": 500})
    on = ("kill-switch", "on", "--tenant", tenant, "--account", "acct-1", "--reason", "r")

    twice = [cli(*on), cli(*on)]
    halted = account.get().to_dict() or {}
    off = cli("kill-switch", "off", "--tenant", tenant, "--account", "acct-1")

    assert [r.exit_code for r in [*twice, off]] == [0, 0, 0], off.output
    assert halted["trading_mode"] == "OFF"
    restored = account.get().to_dict() or {}
    assert (restored["trading_mode"], restored["max_inflight_usd"]) == ("PAPER", 500)


def test_a_global_halt_cancels_every_open_order_of_ours_and_no_foreign_one(
    cli: Callable[..., Result], alpaca: AlpacaSandbox, book: Book, db: firestore.Client
) -> None:
    try:
        result = cli("kill-switch", "on", "--reason", "global drill", "--cancel-open", "--json")

        assert result.exit_code == 0, result.output
        assert statuses(alpaca, book) == {
            "tenant acct-1": "canceled",
            "tenant acct-2": "canceled",
            "tenant hashed": "canceled",
            "other tenant": "canceled",
            "foreign": "accepted",
        }
    finally:
        # The global switch would halt the other tests of this module's project.
        db.collection("ops").document("execution_kill_switch").delete()


def test_an_order_filled_before_its_cancel_is_reported_already_closed(
    cli: Callable[..., Result], alpaca: AlpacaSandbox, book: Book
) -> None:
    alpaca.inject("DELETE", status(422, "order is not cancelable"))

    result = cli(
        "kill-switch",
        "on",
        "--tenant",
        book.tenant,
        "--account",
        "acct-2",
        "--reason",
        "r",
        "--cancel-open",
        "--json",
    )

    assert result.exit_code == 0, result.output
    [cancel] = answer(result)["cancel_open"]["cancels"]
    assert (cancel["client_order_id"], cancel["result"]) == (
        book.ids["tenant acct-2"],
        "already_closed",
    )


def test_a_cancel_the_broker_does_not_answer_is_reported_and_exits_1(
    cli: Callable[..., Result], alpaca: AlpacaSandbox, book: Book
) -> None:
    alpaca.inject("DELETE", status(503, "service unavailable"))

    result = cli(
        "kill-switch",
        "on",
        "--tenant",
        book.tenant,
        "--account",
        "acct-2",
        "--reason",
        "r",
        "--cancel-open",
        "--json",
    )

    assert result.exit_code == EXIT_PROBLEMS
    [cancel] = answer(result)["cancel_open"]["cancels"]
    assert cancel["result"].startswith("unknown, run again")
    assert statuses(alpaca, book)["tenant acct-2"] == "accepted"


def test_an_order_of_ours_that_no_record_locates_is_reported_not_cancelled(
    cli: Callable[..., Result], alpaca: AlpacaSandbox, book: Book
) -> None:
    orphan = client_order_id_for(book.tenant, "acct-1", "o" * 120)  # hashed, no reservation
    book.place_raw("orphan", orphan, book.tenant, "acct-1")

    result = cli(
        "kill-switch", "on", "--tenant", book.tenant, "--reason", "r", "--cancel-open", "--json"
    )

    assert result.exit_code == EXIT_PROBLEMS
    assert answer(result)["cancel_open"]["unlocated"] == [orphan]
    assert statuses(alpaca, book)["orphan"] == "accepted"
