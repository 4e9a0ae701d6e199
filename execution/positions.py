"""Net positions in exact billionths of a share: the one conversion, and the stored form's names.

A quantity has at most MONEY_DECIMAL_PLACES (9) decimals, so every position this service places
is a whole number of billionths of a share. Floats cannot hold that: a float sum of 0.1s drifts
from the exact sum, and past 2**53 billionths (about 9 million shares) a float cannot even hold
every billionth (at ten million shares its step is about 2 billionths). So a position is decided
as a Python integer of billionths, compared exactly with the limit as written, and stored as
integers that Firestore increments exactly, without a read (a release of `placed` must stay
read-free):

    exact_positions  {symbol: {"shares": int, "billionths": int}}   position = shares * 10**9
                                                                     + billionths (billionths)
    positions        {symbol: float}      an earlier version's float sum: read, never written

Two integers, not one: Firestore's integer `Increment` saturates at the int64 bounds (measured on
the emulator: 2**63 - 10 incremented by 100 reads 2**63 - 1), which is 9.2e9 shares in billionths
alone, and a position may reach MAX_LIMIT_QTY (1e12) under a limit, or anything without one. An
order adds its whole shares to one field and its remaining billionths (under 10**9) to the other,
so each field moves by at most 10**9 per order (MAX_QTY): 9.2e9 orders before either could
saturate. A part at an int64 bound is read as malformed (`execution.documents`), never as a
number.

A legacy float `v` (written by `Increment(float)` before this module) keeps counting, as the
interval of billionths between the floor and the ceiling of its decimal (`repr`): exact where it
reads as at most 9 decimals (9.5), else both neighbours (9.99999999999998 is 9.999999999 to 10).
A limit is decided on the worse end for the order's direction (`Position.bounds`), so a drift
below a billionth never lets an order pass; a drift larger than that (many float increments on
a large position) is what the float holds and cannot be recovered. New orders are added to the
integer fields beside it; an operator who knows the true position may replace the float with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_UP, Decimal

from execution.models import EXACT_MONEY, MONEY_DECIMAL_PLACES, money_decimal

BILLION: int = 10**MONEY_DECIMAL_PLACES
"""Billionths in one share: a position's unit."""

EXACT_FIELD = "exact_positions"
"""The account-state field holding each symbol's exact position."""
SHARES = "shares"
"""The whole shares of an exact position (an int64 field, incremented)."""
BILLIONTHS = "billionths"
"""The billionths of an exact position beside its whole shares (an int64 field, incremented)."""
LEGACY_FIELD = "positions"
"""The account-state field an earlier version accumulated float positions in: read only."""


def to_billionths(qty: float) -> int:
    """`qty` shares in billionths, exactly (a validated quantity has at most 9 decimals; one with
    more, which no intent carries, is rounded away from zero: never counted as less)."""
    scaled = EXACT_MONEY.multiply(money_decimal(qty), BILLION)
    return int(scaled.to_integral_value(rounding=ROUND_UP))


def signed_billionths(qty: float, side: str) -> int:
    """What an order of `qty` shares on `side` adds to its symbol's position, in billionths."""
    billionths = to_billionths(qty)
    return billionths if side == "buy" else -billionths


def limit_billionths(limit: float) -> int:
    """The largest position, in billionths, within `limit` shares as written."""
    return int(EXACT_MONEY.multiply(money_decimal(limit), BILLION).to_integral_value(ROUND_FLOOR))


def shares_text(billionths: int) -> str:
    """`billionths` as a decimal number of shares, no exponent: 10000000001 -> "10.000000001"."""
    return format(Decimal(billionths).scaleb(-MONEY_DECIMAL_PLACES).normalize(), "f")


def split(billionths: int) -> tuple[int, int]:
    """The increments of (`shares`, `billionths`) that add `billionths` to a position: whole
    shares and the rest, both of its sign, the rest under 10**9."""
    whole, rest = divmod(abs(billionths), BILLION)
    sign = -1 if billionths < 0 else 1
    return sign * whole, sign * rest


@dataclass(frozen=True)
class Position:
    """One symbol's net position as stored: the exact integer part (None: no entry yet) and an
    earlier version's float (None: none)."""

    exact: int | None = None
    legacy: float | None = None

    def bounds(self) -> tuple[int, int]:
        """The least and the greatest the position may be, in billionths (equal unless a legacy
        float lies between two billionths)."""
        exact = self.exact or 0
        if self.legacy is None:
            return exact, exact
        scaled = EXACT_MONEY.multiply(money_decimal(self.legacy), BILLION)
        low = int(scaled.to_integral_value(rounding=ROUND_FLOOR))
        high = int(scaled.to_integral_value(rounding=ROUND_CEILING))
        return exact + low, exact + high

    def plus(self, billionths: int) -> Position:
        """The position once an order of `billionths` (signed) joined its exact part."""
        return Position((self.exact or 0) + billionths, self.legacy)

    def closed(self) -> bool:
        """True where the position is exactly zero (an entry that may be removed)."""
        return self.bounds() == (0, 0)


def positions_fields(positions: dict[str, Position]) -> dict[str, dict[str, object]]:
    """The two position fields holding `positions` whole (a writer that knows the state)."""
    exact: dict[str, object] = {}
    legacy: dict[str, object] = {}
    for symbol, position in positions.items():
        if position.exact is not None:
            shares, rest = split(position.exact)
            exact[symbol] = {SHARES: shares, BILLIONTHS: rest}
        if position.legacy is not None:
            legacy[symbol] = position.legacy
    return {EXACT_FIELD: exact, LEGACY_FIELD: legacy}
