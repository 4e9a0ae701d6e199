"""Second review: ids at their limits and deliveries out of their time, through `main`.

Every delivery goes through `main.answer_delivery` (the entry points' body) into the engine on the
Firestore emulator with the real `AlpacaBroker` against the Alpaca sandbox on loopback, which keeps
Alpaca's rules that matter here: `client_order_id` at most 128 characters, and unique per account.
The service's clock is a fake one, so a delivery can arrive exactly at a bound.

What a reviewer tried, and what each test shows held: tenants sharing one broker account whose
intent ids are equal and as long as ids may be; ids Firestore or Alpaca would read as something
else; an intent redelivered after the retention policy purged its reservation; a message
redelivered a week after it was published; `created_at` exactly at the age bound and at the skew
bound.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.cloud import firestore

import main
from devtools.alpaca_sandbox import AlpacaSandbox
from execution.bootstrap import Service
from execution.brokers.alpaca import AlpacaBroker
from execution.clock import FakeClock
from execution.freshness import MAX_CLOCK_SKEW_SECONDS
from execution.intake import delivery_from_cloud_event
from execution.models import TradeIntent
from tests.support.builders import (
    client_order_id_of,
    emulator_service,
    live,
    make_intent,
    reservation,
    unique,
)

NOW = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
MAX_AGE_SECONDS = 300.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def service(db: firestore.Client, clock: FakeClock, alpaca_broker: AlpacaBroker) -> Service:
    settings = live(intent_max_age_seconds=MAX_AGE_SECONDS)
    return emulator_service(db, clock, settings=settings, broker=alpaca_broker)


def deliver(
    service: Service,
    data: bytes,
    *,
    published_at: datetime | None = NOW,
    message_id: str | None = None,
) -> str:
    """One delivery of `data` through the entry point's body (it must ack); the message id."""
    message: dict[str, Any] = {
        "data": base64.b64encode(data).decode(),
        "messageId": message_id or unique("m"),
    }
    if published_at is not None:
        message["publishTime"] = published_at.isoformat().replace("+00:00", "Z")
    main.answer_delivery(service, delivery_from_cloud_event({"message": message}))
    return str(message["messageId"])


def as_json(intent: TradeIntent) -> bytes:
    return json.dumps(intent.model_dump(mode="json")).encode()


def dead_letter(db: firestore.Client, message_id: str) -> dict[str, Any]:
    return db.collection("execution_dead_letters").document(message_id).get().to_dict() or {}


# -- ids -------------------------------------------------------------------------------------------


def test_tenants_on_one_broker_account_with_equal_longest_ids_place_separate_orders(
    db: firestore.Client, service: Service, alpaca: AlpacaSandbox
) -> None:
    account, intent_id = "A" * 128, "i" * 128
    # Tenants whose plain-form ids would read alike if the lengths were not part of them.
    tenants = [unique("t") + "-1-x", unique("t")[:-2], "T" * 128, "t" * 128]
    intents = [
        make_intent(tenant_id=tenant, broker_account_id=account, client_intent_id=intent_id)
        for tenant in tenants
    ]

    for intent in intents:
        deliver(service, as_json(intent))

    ids = [client_order_id_of(intent) for intent in intents]
    assert len(set(ids)) == len(intents)
    assert all(len(coid) <= 128 for coid in ids)
    assert [reservation(db, i.tenant_id, intent_id)["outcome"] for i in intents] == ["placed"] * 4
    assert set(alpaca.orders) >= set(ids)


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param({"tenant_id": "a/b"}, id="slash"),
        pytest.param({"tenant_id": ".."}, id="dot-dot"),
        pytest.param({"broker_account_id": "__name__"}, id="reserved"),
        pytest.param({"client_intent_id": "i" * 129}, id="129 characters"),
        pytest.param({"tenant_id": "t\u0435nant"}, id="cyrillic e"),
        pytest.param({"client_intent_id": "intent\u2024x"}, id="one dot leader"),
        pytest.param({"tenant_id": ""}, id="empty"),
        pytest.param({"tenant_id": "   "}, id="blank"),
    ],
)
def test_an_id_that_would_address_another_document_is_dead_lettered(
    db: firestore.Client, service: Service, alpaca: AlpacaSandbox, bad: dict[str, str]
) -> None:
    fields = {**make_intent().model_dump(mode="json"), **bad}

    message_id = deliver(service, json.dumps(fields).encode())

    assert dead_letter(db, message_id)["reason"].startswith("InvalidIntentError")
    assert alpaca.posted_client_order_ids() == []


# -- out of time ---------------------------------------------------------------------------------


def test_an_intent_redelivered_after_its_reservation_was_purged_places_no_second_order(
    db: firestore.Client, service: Service, clock: FakeClock, alpaca: AlpacaSandbox
) -> None:
    intent = make_intent(tenant_id=unique("tenant"))
    deliver(service, as_json(intent))
    placed = reservation(db, intent.tenant_id, intent.client_intent_id)
    db.collection("tenants", intent.tenant_id, "execution_reservations").document(
        intent.client_intent_id
    ).delete()  # what the TTL policy does at `purge_at`

    # A publisher replays it without a publish time (a push body it wrote by hand).
    deliver(service, as_json(intent), published_at=None)

    again = reservation(db, intent.tenant_id, intent.client_intent_id)
    assert (again["outcome"], again["broker_order_id"]) == ("placed", placed["broker_order_id"])
    assert alpaca.posted_client_order_ids() == [client_order_id_of(intent)] * 2
    assert len(alpaca.orders) == 1  # the broker refused the second: same client order id


def test_a_message_redelivered_a_week_after_it_was_published_is_stale_and_reaches_no_broker(
    db: firestore.Client, service: Service, clock: FakeClock, alpaca: AlpacaSandbox
) -> None:
    intent = make_intent(tenant_id=unique("tenant"))

    deliver(service, as_json(intent), published_at=NOW - timedelta(days=7))

    record = reservation(db, intent.tenant_id, intent.client_intent_id)
    assert (record["outcome"], record["error"].split(":")[0]) == ("stale", "intent_stale")
    assert alpaca.seen == []


@pytest.mark.parametrize(
    ("created_before_now", "outcome"),
    [
        pytest.param(timedelta(seconds=MAX_AGE_SECONDS), "placed", id="exactly the max age"),
        pytest.param(
            timedelta(seconds=MAX_AGE_SECONDS, microseconds=1), "stale", id="a microsecond over"
        ),
        pytest.param(-timedelta(seconds=MAX_CLOCK_SKEW_SECONDS), "placed", id="exactly the skew"),
        pytest.param(
            -timedelta(seconds=MAX_CLOCK_SKEW_SECONDS, microseconds=1),
            "stale",
            id="a microsecond past the skew",
        ),
    ],
)
def test_created_at_exactly_at_a_bound_is_fresh_and_a_microsecond_past_it_is_stale(
    db: firestore.Client,
    service: Service,
    alpaca: AlpacaSandbox,
    created_before_now: timedelta,
    outcome: str,
) -> None:
    intent = make_intent(tenant_id=unique("tenant"), created_at=NOW - created_before_now)

    deliver(service, as_json(intent), published_at=None)

    assert reservation(db, intent.tenant_id, intent.client_intent_id)["outcome"] == outcome
    assert len(alpaca.posted_client_order_ids()) == (outcome == "placed")


# -- quotes out of their time -------------------------------------------------------------------


def market_intent_with_quote(db: firestore.Client, quote_ts: datetime) -> TradeIntent:
    """A market buy of 50 shares of a symbol of its own, quoted at $1 at `quote_ts`, on an
    account whose orders may be worth at most $100."""
    symbol = f"RV{uuid.uuid4().hex[:8].upper()}"
    db.collection("market_quotes").document(symbol).set({"bid": 1.0, "ask": 1.0, "ts": quote_ts})
    intent = make_intent(
        tenant_id=unique("tenant"), symbol=symbol, order_type="market", limit_price=None, qty=50
    )
    db.collection("tenants", intent.tenant_id, "accounts").document(intent.broker_account_id).set(
        {"max_order_notional_usd": 100}
    )
    return intent


@pytest.mark.parametrize(
    ("quote_age", "outcome"),
    [
        pytest.param(timedelta(seconds=60), "placed", id="exactly the max age"),
        pytest.param(timedelta(seconds=60, microseconds=1), "rejected", id="a microsecond over"),
        pytest.param(
            -timedelta(seconds=MAX_CLOCK_SKEW_SECONDS), "placed", id="as far ahead as skew"
        ),
        pytest.param(-timedelta(days=1), "rejected", id="stamped a day ahead"),
    ],
)
def test_a_quote_sizes_a_market_order_only_while_fresh_by_either_clock(
    db: firestore.Client,
    service: Service,
    alpaca: AlpacaSandbox,
    quote_age: timedelta,
    outcome: str,
) -> None:
    # A feed whose clock runs a day fast stamps every quote a day ahead: read as age < 0, its
    # last price ($1 here) sized market orders for a day after the feed stopped.
    intent = market_intent_with_quote(db, NOW - quote_age)

    deliver(service, as_json(intent))

    record = reservation(db, intent.tenant_id, intent.client_intent_id)
    assert record["outcome"] == outcome
    if outcome == "rejected":
        assert record["error"].startswith("quote_")
    assert len(alpaca.posted_client_order_ids()) == (outcome == "placed")


# -- symbols as field names ---------------------------------------------------------------------


@pytest.mark.parametrize("symbol", ["BRK.B", "BF-B", "9.9"])
def test_a_symbol_with_a_dot_or_dash_counts_against_its_own_position(
    db: firestore.Client, service: Service, alpaca: AlpacaSandbox, symbol: str
) -> None:
    # Positions are a map keyed by symbol: written as a dotted field path, `BRK.B` would land at
    # positions.BRK.B (a map in a map) and every read of `BRK.B` would find nothing.
    first = make_intent(tenant_id=unique("tenant"), symbol=symbol, qty=5)
    second = make_intent(
        tenant_id=first.tenant_id, broker_account_id=first.broker_account_id, symbol=symbol, qty=1
    )
    db.collection("tenants", first.tenant_id, "accounts").document(first.broker_account_id).set(
        {"max_position_qty": 5}
    )

    deliver(service, as_json(first))
    deliver(service, as_json(second))

    outcomes = [
        reservation(db, i.tenant_id, i.client_intent_id)["outcome"] for i in (first, second)
    ]
    assert outcomes == ["placed", "rejected"]
    assert len(alpaca.posted_client_order_ids()) == 1
