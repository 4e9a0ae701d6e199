"""Second review: an account's symbol lists read the way the intent's symbol is read.

An intent's symbol is stripped and upper-cased (`aapl` trades AAPL), and Alpaca writes a crypto pair
with a slash (`BTC/USD`) that our symbols never carry (`BTCUSD`). An operator's deny list was
compared as written: `denied_symbols: ["tsla"]`, `[" TSLA"]` or `["BTC/USD"]` denied nothing, and
the intents it was written to stop were placed. An allow list written so refused every intent.

Each intent goes through `main.answer_delivery` into the engine on the Firestore emulator with the
real `AlpacaBroker` against the Alpaca sandbox on loopback.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from google.cloud import firestore

import main
from devtools.alpaca_sandbox import AlpacaSandbox
from execution.bootstrap import Service
from execution.brokers.alpaca import AlpacaBroker
from execution.clock import system_clock
from execution.intake import delivery_from_cloud_event
from execution.models import TradeIntent
from tests.support.builders import emulator_service, live, make_intent, reservation, unique


@pytest.fixture
def service(db: firestore.Client, alpaca_broker: AlpacaBroker) -> Service:
    return emulator_service(db, system_clock, settings=live(), broker=alpaca_broker)


def deliver(service: Service, intent: TradeIntent) -> None:
    data = json.dumps(intent.model_dump(mode="json")).encode()
    message = {"data": base64.b64encode(data).decode(), "messageId": unique("m")}
    main.answer_delivery(service, delivery_from_cloud_event({"message": message}))


def set_account(db: firestore.Client, intent: TradeIntent, limits: dict[str, Any]) -> None:
    db.collection("tenants", intent.tenant_id, "accounts").document(intent.broker_account_id).set(
        limits
    )


@pytest.mark.parametrize(
    ("symbol", "denied"),
    [
        pytest.param("TSLA", ["tsla"], id="lower case"),
        pytest.param("TSLA", [" TSLA\n"], id="padded"),
        pytest.param("BTCUSD", ["BTC/USD"], id="a pair as Alpaca writes it"),
        pytest.param("BRK.B", ["brk.b"], id="class share"),
    ],
)
def test_a_deny_list_written_in_another_case_or_form_still_denies(
    db: firestore.Client,
    service: Service,
    alpaca: AlpacaSandbox,
    symbol: str,
    denied: list[str],
) -> None:
    intent = make_intent(tenant_id=unique("tenant"), symbol=symbol)
    set_account(db, intent, {"denied_symbols": denied})

    deliver(service, intent)

    record = reservation(db, intent.tenant_id, intent.client_intent_id)
    assert (record["outcome"], record["error"]) == ("rejected", f"symbol_denied: {symbol}")
    assert alpaca.posted_client_order_ids() == []


def test_an_allow_list_written_in_lower_case_allows_its_symbols(
    db: firestore.Client, service: Service, alpaca: AlpacaSandbox
) -> None:
    intent = make_intent(tenant_id=unique("tenant"), symbol="AAPL")
    set_account(db, intent, {"allowed_symbols": ["aapl", "msft"]})

    deliver(service, intent)

    assert reservation(db, intent.tenant_id, intent.client_intent_id)["outcome"] == "placed"


def test_a_list_entry_that_is_no_symbol_makes_the_limits_unreadable_never_ignored(
    db: firestore.Client, service: Service, alpaca: AlpacaSandbox
) -> None:
    # `\u017fpy` (a long s) upper-cases to SPY: read loosely it would deny SPY by accident, or
    # an entry that matches nothing would silently deny nothing. Fail closed, as for any
    # malformed limit.
    intent = make_intent(tenant_id=unique("tenant"), symbol="SPY")
    set_account(db, intent, {"denied_symbols": ["TSLA", "\u017fpy"]})

    deliver(service, intent)

    record = reservation(db, intent.tenant_id, intent.client_intent_id)
    assert (record["outcome"], record["error"]) == ("rejected", "risk_data_unavailable")
    assert alpaca.posted_client_order_ids() == []
