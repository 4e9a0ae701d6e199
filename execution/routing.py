"""The route stage: a quote-based allow/deny before any money moves. Best-effort, never raises."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from execution.clock import Clock
from execution.freshness import MAX_CLOCK_SKEW_SECONDS
from execution.models import TradeIntent

MAX_QUOTE_PRICE = 1e9
"""The highest price a quote may carry: above any listed share, far below overflow."""


def quote_problem(bid: float, ask: float) -> str | None:
    """Why `bid`/`ask` cannot price an order (None: they can): finite, positive, bid <= ask."""
    for name, price in (("bid", bid), ("ask", ask)):
        if not (math.isfinite(price) and 0 < price <= MAX_QUOTE_PRICE):
            return f"{name} {price!r} is not a price in (0, {MAX_QUOTE_PRICE:g}]"
    if bid > ask:
        return f"bid {bid!r} is above ask {ask!r}"
    return None


@dataclass(frozen=True)
class Quote:
    """The latest bid/ask for a symbol (`market_quotes/{symbol}`); always a usable price.

    A quote that is not finite, not positive or crossed cannot be built (`ValueError`): the
    store's adapter turns such a document into "no quote", so routing and sizing never see NaN.
    """

    symbol: str
    bid: float
    ask: float
    ts: datetime

    def __post_init__(self) -> None:
        problem = quote_problem(self.bid, self.ask)
        if problem is not None:
            raise ValueError(f"quote for {self.symbol}: {problem}")

    @property
    def mid(self) -> float:
        """The midpoint price."""
        return (self.bid + self.ask) / 2

    @property
    def spread_bps(self) -> float:
        """The spread in basis points of the midpoint."""
        return (self.ask - self.bid) / self.mid * 10_000

    def price_for(self, side: str) -> float:
        """The price a market order on `side` would likely pay."""
        return self.ask if side == "buy" else self.bid


class QuoteSource(Protocol):
    """Reads the latest quote for a symbol."""

    def latest(self, symbol: str) -> Quote | None:
        """The latest quote, or None where there is none; raises `StoreUnavailableError`."""
        ...


@dataclass(frozen=True)
class RouteDecision:
    """Whether the intent may proceed to risk, and why not."""

    allowed: bool
    reason: str | None = None


class Router(Protocol):
    """The routing stage's port."""

    def route(self, intent: TradeIntent, quote: Quote | None) -> RouteDecision:
        """Decide on `intent` given its quote (None: missing or unreadable). Never raises."""
        ...


class QuoteGate:
    """The route stage: allows or denies on the quote (it picks no venue). Denies on a wide
    spread, a stale quote or one stamped further ahead than clocks may differ
    (`MAX_CLOCK_SKEW_SECONDS`); a missing quote passes unless `strict`."""

    def __init__(
        self,
        *,
        clock: Clock,
        max_spread_bps: float,
        quote_max_age_seconds: float,
        strict: bool = False,
    ) -> None:
        self._clock = clock
        self._max_spread_bps = max_spread_bps
        self._quote_max_age_seconds = quote_max_age_seconds
        self._strict = strict

    def route(self, intent: TradeIntent, quote: Quote | None) -> RouteDecision:
        """Allow or deny `intent` on its quote."""
        if quote is None:
            if self._strict:
                return RouteDecision(False, "quote_unavailable")
            return RouteDecision(True, "quote_unavailable")
        age = (self._clock() - quote.ts).total_seconds()
        if age > self._quote_max_age_seconds:
            return RouteDecision(False, f"quote_stale: {age:.0f}s old")
        if age < -MAX_CLOCK_SKEW_SECONDS:
            # A feed whose clock runs ahead stamps every quote in the future: read as young, its
            # last price would size market orders long after the feed stopped.
            return RouteDecision(
                False,
                f"quote_from_the_future: stamped {-age:.0f}s from now "
                f"(clock skew allowed: {MAX_CLOCK_SKEW_SECONDS:g}s)",
            )
        if quote.spread_bps > self._max_spread_bps:
            return RouteDecision(
                False, f"spread_too_wide: {quote.spread_bps:.1f} bps > {self._max_spread_bps:g}"
            )
        return RouteDecision(True)
