"""Second review: a broker answer for another quantity or price, however close, is not our order.

The first review made an answer naming another order "outcome unknown". Its comparison allowed a
relative difference of one billionth, meant for a float's round trip through the broker's decimal
strings; but one billionth of a million shares is a thousandth of a share, and of a $10,000,000
limit price one cent: an order for 1000000.001 shares, or at $10,000,000.00 where we asked
$9,999,999.99, was adopted as ours and recorded `placed`. A round trip of our own decimals is exact
(we send `repr` of each float, at most 9 decimal places), so only a difference below half a
billionth is a round trip.

Each intent goes through `main.execute_intent` into the engine on the Firestore emulator with the
real `AlpacaBroker` against a loopback server scripting Alpaca's answer.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from google.cloud import firestore

import main
from execution.bootstrap import Service
from execution.errors import RetryableError
from tests.support.alpaca_wire import alpaca_service, intent_event, json_ok, order_json
from tests.support.builders import ledger_entries, make_intent, reservation, unique
from tests.support.wire_server import WireServer

KEY_ID = "PKREVIEW2ANSWERS0001"
SECRET_KEY = "review2-answers-secret-0001"
TENANT = "tenant-review2-answers"


@pytest.fixture(autouse=True)
def as_deployed(
    db: firestore.Client, wire: WireServer, firestore_project: str, monkeypatch: pytest.MonkeyPatch
) -> Service:
    service = alpaca_service(
        db, wire.base_url, firestore_project, key_id=KEY_ID, secret_key=SECRET_KEY
    )
    monkeypatch.setattr(main, "_service", service)
    return service


CLOSE_BUT_NOT_OURS = [
    pytest.param({"qty": 1_000_000}, {"qty": "1000000.001"}, id="a thousandth of a share more"),
    pytest.param({"qty": 1_000_000_000}, {"qty": "1000000001"}, id="one share more of 1e9"),
    pytest.param(
        {"limit_price": 9_999_999.99}, {"limit_price": "10000000"}, id="one cent over the limit"
    ),
    pytest.param({"qty": 1}, {"qty": "1.000000001"}, id="a billionth of a share more"),
]


@pytest.mark.parametrize(("asked", "answered"), CLOSE_BUT_NOT_OURS)
def test_an_answer_for_a_slightly_different_quantity_or_price_is_never_recorded_placed(
    db: firestore.Client, wire: WireServer, asked: dict[str, Any], answered: dict[str, str]
) -> None:
    intent = make_intent(tenant_id=TENANT, **{"qty": 1, "limit_price": 1.0, **asked})
    wire.script(json_ok(order_json(intent, id=str(uuid.uuid4()), **answered)))

    with pytest.raises(RetryableError) as retried:
        main.execute_intent(intent_event(intent, unique("m")))

    assert "not this intent's" in str(retried.value)
    record = reservation(db, TENANT, intent.client_intent_id)
    assert (record["outcome"], record.get("broker_order_id")) == ("exception", None)
    assert ledger_entries(db, TENANT, intent.client_intent_id) == []


@pytest.mark.parametrize(
    ("asked", "answered"),
    [
        pytest.param({"qty": 0.1}, {"qty": "0.100000000"}, id="trailing zeros"),
        pytest.param({"qty": 3}, {"qty": "3.0"}, id="integer as decimal"),
        pytest.param({"limit_price": 100.5}, {"limit_price": "100.50"}, id="price with a zero"),
        pytest.param({"qty": 123456.123456789}, {"qty": "123456.123456789"}, id="nine places"),
    ],
)
def test_our_own_decimals_written_another_way_are_still_our_order(
    db: firestore.Client, wire: WireServer, asked: dict[str, Any], answered: dict[str, str]
) -> None:
    intent = make_intent(tenant_id=TENANT, **{"qty": 1, "limit_price": 1.0, **asked})
    order_id = str(uuid.uuid4())
    wire.script(json_ok(order_json(intent, id=order_id, **answered)))

    main.execute_intent(intent_event(intent, unique("m")))

    record = reservation(db, TENANT, intent.client_intent_id)
    assert (record["outcome"], record["broker_order_id"]) == ("placed", order_id)
