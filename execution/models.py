"""The values that cross the system's edges: the trade intent, the order, the execution result."""

from __future__ import annotations

import decimal
import hashlib
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

_ID_PATTERN = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
_RESERVED_ID = re.compile(r"__.*__")
_SYMBOL_PATTERN = re.compile(r"[A-Z0-9][A-Z0-9.\-]{0,31}")
_MAX_METADATA_BYTES = 4096

MAX_QTY = 1_000_000_000.0
"""Shares (or units) one intent may ask for: far above any real order, far below overflow."""
MAX_PRICE_USD = 10_000_000.0
"""A limit price per share in USD: above any listed share, and finite when multiplied."""
MAX_NOTIONAL_USD = 1_000_000_000_000.0
"""A declared notional in USD: bounded so every sum of them stays exact enough and finite."""

MONEY_DECIMAL_PLACES = 9
"""Decimal places a quantity, price or notional may have: Alpaca takes shares to 9 places and no
broker prices finer. A finer number (a subnormal `5e-324`, `1e-10`) is refused, not rounded: the
broker would refuse or round it, and a product of such numbers can underflow to a $0 reservation.
"""


def _within_money_precision(value: float) -> float:
    exponent = Decimal(repr(value)).as_tuple().exponent  # an int for every finite number
    if isinstance(exponent, int) and exponent < -MONEY_DECIMAL_PLACES:
        raise ValueError(f"must have at most {MONEY_DECIMAL_PLACES} decimal places")
    return value


def decimal_text(value: float) -> str:
    """The decimal we send a broker for `value`: `10.0` → "10", `1e-07` → "0.0000001"; the
    shortest digits that read back as the same float, no exponent."""
    return format(Decimal(repr(value)).normalize(), "f")


EXACT_MONEY = decimal.Context(prec=100, traps=[decimal.Inexact, decimal.Rounded])
"""Decimal arithmetic that never rounds money: an amount's decimal has at most 17 significant
digits between 1e16 (qty 1e9 x limit price 1e7) and 1e-35, so a product (34 digits) or a sum of
thousands fits in 100; should one ever need more, it raises rather than rounds."""


def money_decimal(value: float) -> Decimal:
    """The decimal a money float stands for: the shortest that reads back as it (`repr`), which
    is a limit, price or notional as written and, for a `worth_usd`, at least the exact worth."""
    return Decimal(repr(value))


def worth_usd(qty: float, price: float) -> float:
    """`qty` * `price`, never below the exact product of the decimals the broker reads, as a float
    or as its decimal (`money_decimal`).

    The broker multiplies the decimals we send (`repr` of each float); the float product may round
    below that (5.3374171 * 1873.565399264 is exactly 10000.0 in floats, 10000.000000000001 at the
    broker), and a cap compared with it would let the order through. Rounded up instead, until
    both the float and the shortest decimal that reads back as it are at least the exact product
    (the budget sums those decimals: `execution.account_state`).
    """
    exact = EXACT_MONEY.multiply(money_decimal(qty), money_decimal(price))
    product = qty * price
    while Decimal(product) < exact or money_decimal(product) < exact:
        product = math.nextafter(product, math.inf)  # a step or two: within an ulp or so
    return product


# Money fields take JSON numbers only: strict mode refuses `true` (lax: 1 share) and strings
# such as "7" or "1e2" (lax: coerced), so what the publisher meant is never guessed.
_POSITIVE_NUMBER = Field(strict=True, gt=0, allow_inf_nan=False)
_MONEY_PRECISION = AfterValidator(_within_money_precision)


def validate_document_id(value: str) -> str:
    """Return `value` if it is safe as a Firestore document id and a broker client order id.

    Ids become path segments (`tenants/{tenant_id}/...`) and the broker's `client_order_id`, so
    slashes, `.`/`..` and Firestore's reserved `__x__` form would address the wrong document.
    """
    if not _ID_PATTERN.fullmatch(value):
        raise ValueError("must be 1-128 characters of A-Z, a-z, 0-9, '_', '.', '-'")
    if value in {".", ".."} or _RESERVED_ID.fullmatch(value):
        raise ValueError("must not be '.', '..' or of the reserved form '__name__'")
    return value


DocumentId = Annotated[str, AfterValidator(validate_document_id)]


def ticker(value: str) -> str:
    """`value` as the symbol an intent trades: stripped and upper-cased; ValueError where it is
    none. Every list compared with an intent's symbol (an account's allow and deny lists) reads
    its entries with this, so `tsla` there is the TSLA an intent names."""
    # ASCII first: str.upper() maps the long s (U+017F) to 'S', the dotless i (U+0131) to
    # 'I' and the ligature U+FB00 to 'FF', which would turn a look-alike into a real ticker.
    value = value.strip()
    if not value.isascii() or not _SYMBOL_PATTERN.fullmatch(value := value.upper()):
        raise ValueError(
            "must be 1-32 ASCII characters of A-Z, 0-9, '.', '-', starting with a letter or digit"
        )
    return value


class Outcome(StrEnum):
    """How an execution ended (contract: these strings are stored and reported)."""

    PLACED = "placed"
    REJECTED = "rejected"
    DRY_RUN = "dry_run"
    HALTED = "halted"
    DUPLICATE = "duplicate"
    STALE = "stale"
    EXCEPTION = "exception"
    EXPIRED = "expired"


TERMINAL_OUTCOMES = frozenset(
    {Outcome.PLACED, Outcome.REJECTED, Outcome.DRY_RUN, Outcome.HALTED, Outcome.STALE}
)
"""Outcomes that end an intent for good: a later delivery is a duplicate."""

RETRYABLE_OUTCOMES = frozenset({Outcome.EXCEPTION, Outcome.EXPIRED})
"""Outcomes after which a later delivery may execute the intent again."""


class TradeIntent(BaseModel):
    """A request to trade, as published to the intents topic (contract)."""

    # Unknown fields are refused: a misspelt "dryrun" must not silently place a real order.
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    tenant_id: DocumentId
    broker_account_id: DocumentId
    client_intent_id: DocumentId
    symbol: str
    side: Literal["buy", "sell"]
    qty: Annotated[float, _POSITIVE_NUMBER, Field(le=MAX_QTY), _MONEY_PRECISION]
    order_type: Literal["market", "limit"]
    limit_price: (
        Annotated[float, _POSITIVE_NUMBER, Field(le=MAX_PRICE_USD), _MONEY_PRECISION] | None
    ) = None
    time_in_force: Literal["day", "gtc", "ioc", "fok", "opg", "cls"] = "day"
    notional_usd: (
        Annotated[float, _POSITIVE_NUMBER, Field(le=MAX_NOTIONAL_USD), _MONEY_PRECISION] | None
    ) = None
    strategy_id: str | None = Field(default=None, max_length=128)
    created_at: datetime | None = None
    dry_run: bool = Field(default=False, strict=True)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("symbol")
    @classmethod
    def _symbol_is_a_ticker(cls, value: str) -> str:
        return ticker(value)

    @field_validator("created_at", mode="before")
    @classmethod
    def _created_at_is_text(cls, value: Any) -> Any:
        # Lax mode would read a number as a Unix time, in seconds or milliseconds as it guesses.
        if value is not None and not isinstance(value, str | datetime):
            raise ValueError("must be an ISO-8601 string, e.g. 2026-01-05T14:30:00Z")
        return value

    @field_validator("created_at")
    @classmethod
    def _created_at_is_aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("must carry a time zone, e.g. 2026-01-05T14:30:00Z")
        try:
            return value.astimezone(UTC) if value is not None else None
        except OverflowError:  # e.g. year 1 at +23:59 or year 9999 at -23:59
            raise ValueError("is outside the range of UTC times") from None

    @field_validator("metadata")
    @classmethod
    def _metadata_is_small(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            size = len(json.dumps(value, default=str))
        except RecursionError:
            raise ValueError("is nested too deeply") from None
        if size > _MAX_METADATA_BYTES:
            raise ValueError(f"must serialise to at most {_MAX_METADATA_BYTES} bytes of JSON")
        return value

    @model_validator(mode="after")
    def _limit_price_matches_order_type(self) -> TradeIntent:
        if self.order_type == "limit" and self.limit_price is None:
            raise ValueError("limit orders need limit_price")
        if self.order_type == "market" and self.limit_price is not None:
            raise ValueError("market orders take no limit_price")
        return self

    def payload_hash(self) -> str:
        """A digest of the whole intent: the same id must always carry the same payload."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def known_notional_usd(self) -> float | None:
        """The amount to reserve when the intent itself says it, else None (needs a quote)."""
        if self.notional_usd is not None:
            return self.notional_usd
        if self.limit_price is not None:
            return worth_usd(self.qty, self.limit_price)
        return None


@dataclass(frozen=True)
class OrderRequest:
    """What the engine asks a broker to place, under the intent's tenant-safe client order id."""

    tenant_id: str
    broker_account_id: str
    client_order_id: str
    symbol: str
    side: str
    qty: float
    order_type: str
    limit_price: float | None
    time_in_force: str
    reference_price: float | None = None

    @classmethod
    def from_intent(
        cls, intent: TradeIntent, reference_price: float | None, client_order_id: str
    ) -> OrderRequest:
        """Build the order for `intent`; the broker dedupes on `client_order_id`.

        `client_order_id` is the reservation's (`execution.client_order_ids`), never the intent's
        own id: one broker account may serve tenants whose intent ids collide.
        """
        return cls(
            tenant_id=intent.tenant_id,
            broker_account_id=intent.broker_account_id,
            client_order_id=client_order_id,
            symbol=intent.symbol,
            side=intent.side,
            qty=intent.qty,
            order_type=intent.order_type,
            limit_price=intent.limit_price,
            time_in_force=intent.time_in_force,
            reference_price=reference_price,
        )


DEAD_ORDER_STATUSES = frozenset({"rejected", "canceled", "cancelled", "expired"})
"""Broker statuses (Alpaca's) of an order closed before it could fill any further."""


@dataclass(frozen=True)
class BrokerOrder:
    """An order as the broker knows it: enough to tell whether it is a given request."""

    broker_order_id: str
    client_order_id: str
    symbol: str
    side: str
    qty: float
    """Shares ordered; 0.0 for an order placed by notional amount (ours never are)."""
    status: str
    """The broker's order status as it writes it (Alpaca: `accepted`, `filled`, `canceled`...)."""
    filled_avg_price: float | None = None
    order_type: str = "market"
    limit_price: float | None = None
    time_in_force: str = "day"
    submitted_at: datetime | None = None
    """When the broker took the order (aware, UTC); None where it does not say."""
    filled_qty: float | None = None
    """Shares filled so far; None where the broker does not say."""

    def never_fills(self) -> bool:
        """The order exists but is closed with nothing filled, so it never trades: `rejected`
        (which never fills), or `canceled`/`expired` with a fill of 0 said, not assumed (an
        order canceled after a partial fill traded)."""
        status = self.status.lower()
        if status not in DEAD_ORDER_STATUSES:
            return False
        return self.filled_qty == 0 or (self.filled_qty is None and status == "rejected")

    @classmethod
    def for_request(
        cls,
        request: OrderRequest,
        *,
        broker_order_id: str,
        status: str,
        submitted_at: datetime | None,
        filled_avg_price: float | None = None,
    ) -> BrokerOrder:
        """The order a broker holds for `request` as sent (simulated brokers build theirs so)."""
        return cls(
            broker_order_id=broker_order_id,
            client_order_id=request.client_order_id,
            symbol=request.symbol,
            side=request.side,
            qty=request.qty,
            status=status,
            filled_avg_price=filled_avg_price,
            order_type=request.order_type,
            limit_price=request.limit_price,
            time_in_force=request.time_in_force,
            submitted_at=submitted_at,
        )


class ExecutionResult(BaseModel):
    """What became of one delivery of an intent."""

    model_config = ConfigDict(frozen=True)

    outcome: Outcome
    tenant_id: str
    broker_account_id: str
    client_intent_id: str
    reason: str | None = None
    broker_order_id: str | None = None
    attempt: int | None = None
    amount_usd: float | None = None
    recorded_outcome: Outcome | None = None
    """For a duplicate: the outcome recorded by the delivery that executed the intent."""

    @classmethod
    def for_intent(cls, intent: TradeIntent, outcome: Outcome, **fields: Any) -> ExecutionResult:
        """A result for `intent` with its identifying fields filled in."""
        return cls(
            outcome=outcome,
            tenant_id=intent.tenant_id,
            broker_account_id=intent.broker_account_id,
            client_intent_id=intent.client_intent_id,
            **fields,
        )
