"""The trade intent as the contract defines it: ids, fields, prices, times and the payload hash."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from pydantic import ValidationError

from execution.models import (
    EXACT_MONEY,
    BrokerOrder,
    OrderRequest,
    TradeIntent,
    money_decimal,
    validate_document_id,
    worth_usd,
)
from tests.unit.fakes import make_intent, market_intent


def errors_for(raised: pytest.ExceptionInfo[ValidationError]) -> list[str]:
    """The dotted field locations a validation error names."""
    return [".".join(str(part) for part in error["loc"]) for error in raised.value.errors()]


# --- ids -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["a", "intent-1", "Intent_2.v3", "x" * 128, "...", "a..b", "_x_", "__x", "x__"]
)
def test_ids_of_1_to_128_safe_characters_are_accepted(value: str) -> None:
    assert validate_document_id(value) == value


@pytest.mark.parametrize(
    "value",
    ["", "x" * 129, "a/b", "/a", "a b", "a:b", "é", "a\nb", "a\\b", "a#b"],
)
def test_ids_outside_the_character_set_or_length_are_refused(value: str) -> None:
    with pytest.raises(ValueError) as raised:
        validate_document_id(value)

    assert "1-128 characters" in str(raised.value)


@pytest.mark.parametrize("value", [".", "..", "__x__", "__name__", "____"])
def test_dot_dotdot_and_the_reserved_dunder_form_are_refused(value: str) -> None:
    with pytest.raises(ValueError) as raised:
        validate_document_id(value)

    assert "reserved" in str(raised.value)


@pytest.mark.parametrize("field", ["tenant_id", "broker_account_id", "client_intent_id"])
def test_every_id_field_of_an_intent_is_validated(field: str) -> None:
    with pytest.raises(ValidationError) as raised:
        make_intent(**{field: "tenants/other"})

    assert errors_for(raised) == [field]


def test_an_id_with_a_slash_in_the_intent_is_refused() -> None:
    with pytest.raises(ValidationError) as raised:
        make_intent(client_intent_id="a/../b")

    assert errors_for(raised) == ["client_intent_id"]


def test_surrounding_whitespace_is_stripped_from_ids() -> None:
    assert make_intent(client_intent_id="  intent-1 ").client_intent_id == "intent-1"


# --- fields --------------------------------------------------------------------------------


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError) as raised:
        make_intent(dryrun=True)

    assert errors_for(raised) == ["dryrun"]


def test_missing_required_fields_are_refused() -> None:
    with pytest.raises(ValidationError) as raised:
        TradeIntent.model_validate({"tenant_id": "t"})

    assert set(errors_for(raised)) == {
        "broker_account_id",
        "client_intent_id",
        "symbol",
        "side",
        "qty",
        "order_type",
    }


def test_the_defaults_are_day_not_dry_run_and_empty_metadata() -> None:
    intent = make_intent()

    assert (intent.time_in_force, intent.dry_run, intent.metadata) == ("day", False, {})


def test_an_intent_is_immutable() -> None:
    intent = make_intent()

    with pytest.raises(ValidationError):
        intent.qty = 5  # type: ignore[misc]

    assert intent.qty == 10


@pytest.mark.parametrize(
    "field,value", [("side", "short"), ("order_type", "stop"), ("time_in_force", "forever")]
)
def test_enumerated_fields_refuse_unknown_values(field: str, value: str) -> None:
    with pytest.raises(ValidationError) as raised:
        make_intent(**{field: value})

    assert errors_for(raised) == [field]


def test_oversized_metadata_is_refused() -> None:
    with pytest.raises(ValidationError) as raised:
        make_intent(metadata={"note": "x" * 5000})

    assert errors_for(raised) == ["metadata"]


# --- prices and quantities -----------------------------------------------------------------


def test_a_limit_order_needs_a_limit_price() -> None:
    with pytest.raises(ValidationError) as raised:
        make_intent(limit_price=None)

    assert "limit orders need limit_price" in str(raised.value)


def test_a_market_order_takes_no_limit_price() -> None:
    with pytest.raises(ValidationError) as raised:
        make_intent(order_type="market", limit_price=50.0)

    assert "market orders take no limit_price" in str(raised.value)


@pytest.mark.parametrize("qty", [0, -1, -0.5])
def test_qty_must_be_positive(qty: float) -> None:
    with pytest.raises(ValidationError) as raised:
        make_intent(qty=qty)

    assert errors_for(raised) == ["qty"]


@pytest.mark.parametrize("field", ["qty", "limit_price", "notional_usd"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "NaN", "inf"])
def test_nan_and_infinity_are_refused_in_every_number(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as raised:
        make_intent(**{field: value})

    assert errors_for(raised) == [field]


@pytest.mark.parametrize("field", ["limit_price", "notional_usd"])
def test_prices_and_notionals_must_be_positive(field: str) -> None:
    with pytest.raises(ValidationError) as raised:
        make_intent(**{field: 0})

    assert errors_for(raised) == [field]


def test_the_known_notional_of_a_limit_order_is_qty_times_limit() -> None:
    assert make_intent(qty=3, limit_price=20.0).known_notional_usd() == 60.0


def test_an_explicit_notional_wins_over_qty_times_limit() -> None:
    assert make_intent(notional_usd=75.0).known_notional_usd() == 75.0


def test_a_market_order_without_notional_has_no_known_notional() -> None:
    assert market_intent().known_notional_usd() is None


# --- created_at ----------------------------------------------------------------------------


def test_created_at_without_a_time_zone_is_refused() -> None:
    with pytest.raises(ValidationError) as raised:
        make_intent(created_at="2026-01-05T14:30:00")

    assert errors_for(raised) == ["created_at"]


def test_created_at_as_a_naive_datetime_is_refused() -> None:
    with pytest.raises(ValidationError) as raised:
        make_intent(created_at=datetime(2026, 1, 5, 14, 30))

    assert errors_for(raised) == ["created_at"]


def test_created_at_is_normalised_to_utc() -> None:
    intent = make_intent(created_at="2026-01-05T15:30:00+01:00")

    assert intent.created_at == datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
    assert intent.created_at is not None and intent.created_at.utcoffset() == timedelta(0)


def test_created_at_accepts_the_z_suffix() -> None:
    intent = make_intent(created_at="2026-01-05T14:30:00Z")

    assert intent.created_at == datetime(2026, 1, 5, 14, 30, tzinfo=UTC)


# --- symbol --------------------------------------------------------------------------------


def test_the_symbol_is_upper_cased() -> None:
    assert make_intent(symbol="brk.b").symbol == "BRK.B"


@pytest.mark.parametrize("symbol", ["", "-AAPL", ".A", "AA PL", "AAPL/USD", "A" * 33, "ÄPL"])
def test_a_symbol_that_is_not_a_ticker_is_refused(symbol: str) -> None:
    with pytest.raises(ValidationError) as raised:
        make_intent(symbol=symbol)

    assert errors_for(raised) == ["symbol"]


# --- payload hash --------------------------------------------------------------------------


def test_the_payload_hash_is_stable_across_equal_intents() -> None:
    assert make_intent().payload_hash() == make_intent().payload_hash()


def test_the_payload_hash_ignores_how_a_default_was_spelled() -> None:
    assert make_intent(time_in_force="day").payload_hash() == make_intent().payload_hash()


def test_the_payload_hash_ignores_metadata_key_order() -> None:
    first = make_intent(metadata={"a": 1, "b": 2})
    second = make_intent(metadata={"b": 2, "a": 1})

    assert first.payload_hash() == second.payload_hash()


def test_the_payload_hash_ignores_the_time_zone_a_created_at_was_written_in() -> None:
    utc = make_intent(created_at="2026-01-05T14:30:00Z")
    plus_one = timezone(timedelta(hours=1))
    paris = make_intent(created_at=datetime(2026, 1, 5, 15, 30, tzinfo=plus_one))

    assert utc.payload_hash() == paris.payload_hash()


def test_the_payload_hash_ignores_integer_versus_float_quantities() -> None:
    assert make_intent(qty=10).payload_hash() == make_intent(qty=10.0).payload_hash()


@pytest.mark.parametrize(
    "change",
    [
        {"qty": 11},
        {"side": "sell"},
        {"limit_price": 100.5},
        {"symbol": "MSFT"},
        {"dry_run": True},
        {"broker_account_id": "acct-2"},
        {"notional_usd": 1000.0},
        {"metadata": {"k": "v"}},
        {"created_at": "2026-01-05T14:30:00Z"},
    ],
)
def test_the_payload_hash_changes_with_any_field(change: dict[str, object]) -> None:
    assert make_intent(**change).payload_hash() != make_intent().payload_hash()


def test_the_payload_hash_is_a_sha256_hex_digest() -> None:
    digest = make_intent().payload_hash()

    assert len(digest) == 64 and set(digest) <= set("0123456789abcdef")


# --- order request -------------------------------------------------------------------------


def test_the_order_request_carries_the_client_order_id_it_is_given() -> None:
    order = OrderRequest.from_intent(make_intent(client_intent_id="intent-9"), 101.0, "ex1-9")

    assert (order.client_order_id, order.reference_price) == ("ex1-9", 101.0)


@pytest.mark.parametrize(
    ("status", "filled_qty", "dead"),
    [
        ("rejected", None, True),
        ("rejected", 0.0, True),
        ("canceled", 0.0, True),
        ("CANCELLED", 0.0, True),
        ("expired", 0.0, True),
        ("canceled", None, False),  # a fill not said is not assumed to be none
        ("expired", None, False),
        ("canceled", 0.5, False),  # traded before it was canceled
        ("accepted", 0.0, False),
        ("filled", 1.0, False),
    ],
)
def test_an_order_never_fills_only_when_closed_with_nothing_filled_said(
    status: str, filled_qty: float | None, dead: bool
) -> None:
    order = BrokerOrder("o-1", "c-1", "AAPL", "buy", 1.0, status, filled_qty=filled_qty)

    assert order.never_fills() is dead


@pytest.mark.parametrize(
    ("qty", "price"),
    [(5.3374171, 1873.565399264), (1512.37, 2.56724016), (4, 25.025), (0.1, 1000.0)],
)
def test_a_worth_and_its_shortest_decimal_are_never_below_the_exact_product(
    qty: float, price: float
) -> None:
    exact = EXACT_MONEY.multiply(money_decimal(qty), money_decimal(price))

    worth = worth_usd(qty, price)

    assert Decimal(worth) >= exact
    assert money_decimal(worth) >= exact
