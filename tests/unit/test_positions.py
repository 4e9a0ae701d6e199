"""Positions in exact billionths: the conversion, the stored parts, and a legacy float's bounds."""

from __future__ import annotations

import pytest

from execution.documents import state_from_document
from execution.positions import (
    BILLION,
    Position,
    limit_billionths,
    positions_fields,
    shares_text,
    split,
    to_billionths,
)


@pytest.mark.parametrize(
    ("qty", "billionths"),
    [
        (0.1, 100_000_000),
        (10.000000999, 10_000_000_999),
        (1e9, 10**18),
        (1e-9, 1),
        (-2.5, -25 * 10**8),
    ],
)
def test_a_quantity_is_its_decimal_in_billionths(qty: float, billionths: int) -> None:
    assert to_billionths(qty) == billionths


def test_a_limit_finer_than_a_billionth_holds_the_billionths_within_it() -> None:
    assert limit_billionths(10) == 10 * BILLION
    assert limit_billionths(0.0000000015) == 1


@pytest.mark.parametrize("billionths", [0, 1, -1, BILLION, -BILLION - 1, 10**18 + 999_999_999])
def test_an_order_splits_into_whole_shares_and_billionths_that_add_back_up(
    billionths: int,
) -> None:
    shares, rest = split(billionths)

    assert shares * BILLION + rest == billionths
    assert abs(rest) < BILLION and shares * rest >= 0


def test_a_legacy_float_counts_as_the_billionths_on_either_side_of_it() -> None:
    drifted = sum([0.1] * 100)  # 9.99999999999998: the orders summed to 10

    assert Position(None, 9.5).bounds() == (9_500_000_000, 9_500_000_000)
    assert Position(None, drifted).bounds() == (9_999_999_999, 10 * BILLION)
    assert Position(1, -0.30000000000000004).bounds() == (-300_000_000, -299_999_999)


def test_only_a_position_exactly_at_zero_is_closed() -> None:
    assert Position(0).closed() and Position(None, 0.0).closed() and Position(5, -5e-9).closed()
    assert not Position(1).closed() and not Position(None, 1e-17).closed()


def test_positions_are_written_whole_as_parts_and_the_floats_beside_them() -> None:
    positions = {"AAPL": Position(-2_500_000_000, 1.5), "MSFT": Position(None, 3.0)}

    assert positions_fields(positions) == {
        "exact_positions": {"AAPL": {"shares": -2, "billionths": -500_000_000}},
        "positions": {"AAPL": 1.5, "MSFT": 3.0},
    }


def test_shares_are_shown_as_plain_decimals() -> None:
    assert [shares_text(n) for n in (20 * BILLION, 10_000_000_001, -1, 0)] == [
        "20",
        "10.000000001",
        "-0.000000001",
        "0",
    ]


def test_positions_written_whole_read_back_as_they_were() -> None:
    # The names live in `execution.positions`; the document model must read what it writes.
    positions = {"AAPL": Position(-2_500_000_000, 1.5), "MSFT": Position(None, 3.0)}
    positions["BRK.B"] = Position(10**18 + 1)

    assert state_from_document(positions_fields(positions)).positions == positions
