"""Positions as a test reads them from a stored account-state document: shares, exactly."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from execution.documents import state_from_document
from execution.positions import MONEY_DECIMAL_PLACES


def positions_of(stored: dict[str, Any] | None) -> dict[str, Decimal]:
    """Each symbol's net position in shares, as the document holds it (exact integer parts and
    any legacy float, which must then read as a whole number of billionths)."""
    held: dict[str, Decimal] = {}
    for symbol, position in state_from_document(stored).positions.items():
        low, high = position.bounds()
        assert low == high, f"{symbol}: between {low} and {high} billionths"
        held[symbol] = Decimal(low).scaleb(-MONEY_DECIMAL_PLACES)
    return held


def position_of(stored: dict[str, Any] | None, symbol: str) -> Decimal:
    """One symbol's net position in shares (0 where the document holds none)."""
    return positions_of(stored).get(symbol, Decimal(0))
