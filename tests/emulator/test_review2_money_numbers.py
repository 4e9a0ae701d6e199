"""Second review: money numbers a publisher can write, through `main` to the loopback Alpaca.

Each intent is published as raw JSON and delivered through `main.execute_intent` into the engine,
the Firestore emulator and the real `AlpacaBroker` against the Alpaca sandbox on loopback. What a
reviewer tried: a key written twice (which value does the risk check see, and which reaches the
broker?), quantities and prices finer than any broker takes (a subnormal quantity reserves $0 and
reaches the broker as a 324-digit decimal), and an order whose worth at the broker's decimals is
over the account's cap while the float product reads exactly at it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from google.cloud import firestore

import main
from devtools.alpaca_sandbox import KEY_ID, SECRET_KEY, AlpacaSandbox
from execution.bootstrap import Service
from execution.brokers.alpaca import AlpacaBroker
from tests.support.alpaca_wire import alpaca_service, pubsub_event
from tests.support.builders import payload_client_order_id, reservation, unique
from tests.support.events import intent_payload

TENANT = "tenant-review2-money"


@pytest.fixture
def service(
    db: firestore.Client, alpaca: AlpacaSandbox, alpaca_broker: AlpacaBroker, firestore_project: str
) -> Service:
    return alpaca_service(
        db,
        alpaca.base_url,
        firestore_project,
        key_id=KEY_ID,
        secret_key=SECRET_KEY,
        broker=alpaca_broker,
    )


@pytest.fixture(autouse=True)
def as_deployed(service: Service, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(main, "_service", service)
    yield


def payload(**overrides: Any) -> dict[str, Any]:
    """A limit buy of 1 share at $100 on an account of its own, with `overrides`."""
    fields = {"broker_account_id": unique("acct"), "qty": 1, "limit_price": 100.0}
    return intent_payload(TENANT, **{**fields, **overrides})


def deliver(data: bytes) -> str:
    """Deliver `data` through the entry point (it must ack); the message id."""
    message_id = unique("m")
    main.execute_intent(pubsub_event(data, message_id))
    return message_id


def dead_letter(db: firestore.Client, message_id: str) -> dict[str, Any]:
    snap = db.collection("execution_dead_letters").document(message_id).get()
    return snap.to_dict() or {}


def limit_account(db: firestore.Client, fields: dict[str, Any], **limits: Any) -> None:
    tenant, account = fields["tenant_id"], fields["broker_account_id"]
    db.collection("tenants", tenant, "accounts").document(account).set(limits)


# -- a key written twice ----------------------------------------------------------------------


def test_an_intent_with_a_money_key_written_twice_is_dead_lettered_never_executed(
    db: firestore.Client, alpaca: AlpacaSandbox
) -> None:
    fields = payload()
    # `{"qty": 1, "qty": 1000}`: Python's json keeps the last, a first-wins reader (a publisher's
    # own check, an audit tool) sees 1. Which one the publisher meant is a guess.
    text = json.dumps(fields)[:-1] + ', "qty": 1000}'
    assert text.count('"qty"') == 2

    message_id = deliver(text.encode())

    letter = dead_letter(db, message_id)
    assert "qty" in letter["reason"] and "more than once" in letter["reason"]
    assert alpaca.posted_client_order_ids() == []
    record = db.collection("tenants", TENANT, "execution_reservations").document(
        fields["client_intent_id"]
    )
    assert not record.get().exists


def test_a_key_written_twice_inside_metadata_is_dead_lettered_too(
    db: firestore.Client, alpaca: AlpacaSandbox
) -> None:
    fields = payload(metadata={"note": "a"})
    text = json.dumps(fields).replace('"note": "a"', '"note": "a", "note": "b"')

    message_id = deliver(text.encode())

    assert "more than once" in dead_letter(db, message_id)["reason"]
    assert alpaca.posted_client_order_ids() == []


# -- numbers finer than a broker takes -----------------------------------------------------------

FINER_THAN_A_BROKER_TAKES = [
    pytest.param({"qty": 5e-324}, id="subnormal qty"),
    pytest.param({"qty": 1e-10}, id="qty of 1e-10"),
    pytest.param({"qty": 1.0000000001}, id="qty with 10 decimals"),
    pytest.param({"limit_price": 100.0000000001}, id="limit price with 10 decimals"),
    pytest.param({"limit_price": 1e-300, "qty": 1e-30}, id="worth underflowing to 0"),
    pytest.param({"notional_usd": 100.0000000001}, id="notional with 10 decimals"),
]


@pytest.mark.parametrize("overrides", FINER_THAN_A_BROKER_TAKES)
def test_a_money_number_finer_than_a_billionth_is_dead_lettered_before_any_reservation(
    db: firestore.Client, alpaca: AlpacaSandbox, overrides: dict[str, Any]
) -> None:
    fields = payload(**overrides)

    message_id = deliver(json.dumps(fields).encode())

    (name,) = [key for key in overrides if key != "qty"] or ["qty"]
    reason = dead_letter(db, message_id).get("reason", "")
    assert name in reason and "9 decimal places" in reason
    assert alpaca.posted_client_order_ids() == []


def test_a_quantity_of_exactly_a_billionth_is_an_order_like_any_other(
    db: firestore.Client, alpaca: AlpacaSandbox
) -> None:
    fields = payload(qty=1e-9, limit_price=250.123456789)

    deliver(json.dumps(fields).encode())

    record = reservation(db, TENANT, fields["client_intent_id"])
    assert record["outcome"] == "placed"
    sent = alpaca.orders[payload_client_order_id(fields)]
    assert (sent["qty"], sent["limit_price"]) == ("0.000000001", "250.123456789")


# -- the cap's edge -------------------------------------------------------------------------------

# 5.3374171 * 1873.565399264 = 10000.0000000000010144 at the broker's decimals, but the float
# product rounds to exactly 10000.0: a cap of 10000 compared in floats lets it through.
OVER_BY_A_ROUNDING = {"qty": 5.3374171, "limit_price": 1873.565399264}


def test_an_order_worth_more_than_the_cap_at_the_brokers_decimals_is_rejected(
    db: firestore.Client, alpaca: AlpacaSandbox
) -> None:
    fields = payload(**OVER_BY_A_ROUNDING)
    qty, price = fields["qty"], fields["limit_price"]
    assert qty * price == 10_000.0
    assert Decimal(repr(qty)) * Decimal(repr(price)) > 10_000
    limit_account(db, fields, max_order_notional_usd=10_000)

    deliver(json.dumps(fields).encode())

    record = reservation(db, TENANT, fields["client_intent_id"])
    assert record["outcome"] == "rejected"
    assert record["error"].startswith("max_order_notional_exceeded")
    assert alpaca.posted_client_order_ids() == []


@pytest.mark.parametrize(
    ("qty", "limit_price", "outcome"),
    [
        pytest.param(4, 25.0, "placed", id="exactly at the cap"),
        pytest.param(3, 33.34, "rejected", id="two cents over"),
        pytest.param(1, 100.01, "rejected", id="one cent over"),
        pytest.param(0.1, 1000.0, "placed", id="0.1 x 1000 is the cap"),
    ],
)
def test_an_order_at_the_cap_is_placed_and_one_cent_over_is_rejected(
    db: firestore.Client, alpaca: AlpacaSandbox, qty: float, limit_price: float, outcome: str
) -> None:
    fields = payload(qty=qty, limit_price=limit_price)
    limit_account(db, fields, max_order_notional_usd=100)

    deliver(json.dumps(fields).encode())

    assert reservation(db, TENANT, fields["client_intent_id"])["outcome"] == outcome
    assert len(alpaca.posted_client_order_ids()) == (outcome == "placed")


# -- integer-valued floats ----------------------------------------------------------------------


def test_an_intent_redelivered_with_1_written_as_1_0_is_a_duplicate_not_a_conflict(
    db: firestore.Client, alpaca: AlpacaSandbox
) -> None:
    fields = payload(qty=2, limit_price=100)
    deliver(json.dumps(fields).encode())
    rewritten = json.dumps({**fields, "qty": 2.0, "limit_price": 100.0}).encode()

    message_id = deliver(rewritten)

    assert dead_letter(db, message_id) == {}
    assert reservation(db, TENANT, fields["client_intent_id"])["outcome"] == "placed"
    assert len(alpaca.posted_client_order_ids()) == 1


def test_data_that_is_base64_of_base64_is_dead_lettered_not_decoded_twice(
    db: firestore.Client, alpaca: AlpacaSandbox
) -> None:
    # A publisher that base64-encodes its own JSON before publishing: Pub/Sub encodes it again.
    inner = base64.b64encode(json.dumps(payload()).encode())

    message_id = deliver(inner)

    assert dead_letter(db, message_id)["reason"].startswith("InvalidIntentError: not JSON")
    assert alpaca.posted_client_order_ids() == []
