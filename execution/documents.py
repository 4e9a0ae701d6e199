"""Every stored document kind as one pydantic model: its contract field names, types and bounds.

Each model is the one way its document is read (`parse`) and written (`to_document`): the adapters
and the command line go through it, so a field is named in one place. A document that does not
fit its model raises `MalformedDocumentError`, a `ValueError` (what the callers catch already),
whose message names the fields and the rules broken; it quotes no stored value, except the prices
a quote's own check (`quote_problem`) names. Where each document lives: `execution.firestore.paths`.

The models hold plain values (`datetime`, `str`, `float`): no storage type appears here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, ClassVar, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from execution import positions
from execution.account_state import AccountState, Lease
from execution.errors import PermanentError
from execution.models import BrokerOrder, Outcome, ticker
from execution.reservations import ReservationRecord, ReservationStatus
from execution.routing import Quote, quote_problem
from execution.settings import AgentMode
from execution.text import bounded_printable

MAX_LIMIT_USD = 1e12
"""The largest dollar limit an account may set: above any real account, far below overflow."""
MAX_LIMIT_QTY = 1e12
"""The largest position limit in units of the symbol."""
MAX_DAILY_ORDERS = 1_000_000
"""The largest orders-per-day limit."""
MAX_PROBLEMS = 5
"""How many broken fields a `MalformedDocumentError` names."""
UNSETTLED_ORDER = "unsettled_order"
"""The reservation field an outlived attempt's pending settle leaves (`ReservationDocument`)."""


class MalformedDocumentError(ValueError):
    """A stored document that does not fit its model; the message names the fields."""


class MalformedReservationError(MalformedDocumentError, PermanentError):
    """A reservation document that does not fit its model (hand-edited, say).

    Permanent: every delivery of the intent meets the same document until an operator repairs
    it, and executing beside a record no one can read could place a second order. The delivery
    is dead-lettered with this reason; the document stays for the operator (the reconciler
    reports an order at the broker whose record is unreadable).
    """


class MalformedAccountError(MalformedDocumentError):
    """An account document whose settings cannot be read; the message names the fields."""


def describe(exc: ValidationError) -> str:
    """The fields and the rules they break, never the values (a document may hold anything)."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'document'}: {error['msg']}"
        for error in exc.errors(include_input=False, include_url=False)[:MAX_PROBLEMS]
    )


def _text_or_none(value: object) -> object:
    return value if isinstance(value, str) else None


def _time_or_none(value: object) -> object:
    return value if isinstance(value, datetime) else None


# Field types. Strict where lax parsing would read a mistyped value as a valid one ("2" as an
# attempt, True as a price); finite and bounded where a number enters a sum or a limit.
Id = Annotated[str, Field(strict=True, min_length=1)]
Text = Annotated[str, Field(strict=True)]
Timestamp = Annotated[datetime, Field(strict=True)]
Amount = Annotated[float, Field(ge=0, allow_inf_nan=False)]
"""A stored dollar amount or quantity: finite and never negative."""
Signed = Annotated[float, Field(allow_inf_nan=False)]
Attempt = Annotated[int, Field(strict=True, ge=1)]
Count = Annotated[int, Field(ge=0)]
PositionPart = Annotated[int, Field(strict=True, gt=-(2**63), lt=2**63 - 1)]
"""An exact position's integer part: an int64 strictly inside its bounds (a saturated one is
no number)."""
UsdLimit = Annotated[float, Field(ge=0, le=MAX_LIMIT_USD, strict=True, allow_inf_nan=False)]
QtyLimit = Annotated[float, Field(ge=0, le=MAX_LIMIT_QTY, strict=True, allow_inf_nan=False)]
Price = Annotated[float, Field(strict=True)]
"""A quote's price: a JSON number; `quote_problem` then requires it finite, positive, bounded."""
ShownText = Annotated[str | None, BeforeValidator(_text_or_none)]
"""A descriptive field an operator may have written anything into: text, else None."""
ShownTime = Annotated[datetime | None, BeforeValidator(_time_or_none)]
_AS_VALUE = PlainSerializer(lambda member: member.value, return_type=str)
Status = Annotated[ReservationStatus, _AS_VALUE]
StoredOutcome = Annotated[Outcome, _AS_VALUE]


class StoredDocument(BaseModel):
    """A document's fields; operators may keep fields of their own on it, which are ignored."""

    # Built at import, not deferred: pydantic's deferred build is not thread-safe (a concurrent
    # first use can validate with the parent class's validator), and an instance serves
    # concurrent requests. `import main` pays for every model once instead.
    model_config = ConfigDict(extra="ignore", frozen=True)

    document_kind: ClassVar[str] = "stored"
    malformed: ClassVar[type[MalformedDocumentError]] = MalformedDocumentError

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Self:
        """The document `data` holds; raises `malformed` (a `MalformedDocumentError`)."""
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            problems = describe(exc)
            raise cls.malformed(f"malformed {cls.document_kind} document: {problems}") from None

    def to_document(self) -> dict[str, Any]:
        """The fields to store."""
        return self.model_dump()


# -- reservations -------------------------------------------------------------------------------


class ReservationKeys(StoredDocument):
    """A reservation's ids alone: what a lookup of its owner reads (by client order id, say)."""

    document_kind = "reservation"

    tenant_id: Id
    broker_account_id: Id
    client_intent_id: Id


class ReservationDocument(ReservationKeys):
    """`tenants/{tenant_id}/execution_reservations/{client_intent_id}` (contract fields)."""

    symbol: Text = ""
    amount_usd: Amount = 0.0
    status: Status
    lease_id: Id
    attempt: Attempt = 1
    created_at: Timestamp
    expires_at: Timestamp
    released_at: Timestamp | None = None
    outcome: StoredOutcome | None = None
    error: Text | None = None
    broker_order_id: Text | None = None
    payload_hash: Text = ""
    side: Text = ""
    qty: Amount = 0.0
    counts_against_budget: bool = False
    counted_lease_id: Id | None = None
    """The lease whose hold on the account state is this intent's; see `_hold_of_older_records`."""
    client_order_id: Text | None = None
    """None on records older than tenant-safe ids: the broker was sent the intent's own id."""
    repair: dict[str, Any] | None = None
    """Written only by the repair to the broker's truth (`execution.broker_truth`)."""
    unsettled_order: dict[str, Any] | None = None
    """`{lease_id, attempt, broker_order_id (or "unknown"), marked_at}`: written only by an
    outlived attempt whose settle was pending (`BrokerTruth.leave_marker`); the repair clears it."""
    purge_at: Timestamp | None = None
    """Set once the reservation is finished: the TTL policy purges it then; a live one has none."""

    @model_validator(mode="before")
    @classmethod
    def _hold_of_older_records(cls, data: Any) -> Any:
        """A record written before holds outlived their lease names none unless its own counted
        lease is still `reserved` (every other one was ended when it was released)."""
        if not isinstance(data, dict) or "counted_lease_id" in data:
            return data
        counted = data.get("counts_against_budget") and data.get("status") == "reserved"
        return {**data, "counted_lease_id": data.get("lease_id") if counted else None}

    @classmethod
    def from_record(cls, record: ReservationRecord) -> ReservationDocument:
        """The document of `record`, live (no `purge_at`)."""
        return cls.parse({name: getattr(record, name) for name in _RECORD_FIELDS})

    def to_record(self) -> ReservationRecord:
        """The record, free of storage fields."""
        values = {name: getattr(self, name) for name in _RECORD_FIELDS}
        values["client_order_id"] = self.client_order_id or self.client_intent_id
        return ReservationRecord(**values)

    def to_document(self) -> dict[str, Any]:
        """Every field but `repair` and `unsettled_order`, which an acquire's update must leave
        as they are."""
        return self.model_dump(exclude=_KEPT_BY_ACQUIRE)


_KEPT_BY_ACQUIRE = {"repair", UNSETTLED_ORDER}

_RECORD_FIELDS = tuple(field.name for field in dataclasses.fields(ReservationRecord))
"""The record's fields: each is a field of the document, under the same name."""


def _shallow_fields(instance: Any) -> dict[str, Any]:
    """A dataclass of plain values as a dict: `dataclasses.asdict` without its deep copy (which
    cost more than the rest of a ledger entry's making)."""
    return {field.name: getattr(instance, field.name) for field in dataclasses.fields(instance)}


def order_fields(order: BrokerOrder) -> dict[str, Any]:
    """An order's fields by name (its values are plain: text, numbers, a time)."""
    return _shallow_fields(order)


def ended_fields(
    status: ReservationStatus,
    outcome: Outcome,
    *,
    error: str | None,
    released_at: datetime,
    purge_at: datetime,
) -> dict[str, Any]:
    """The fields that end a lease (a release, an expiry, a repair); an update leaves the rest."""
    return {
        "status": status.value,
        "outcome": outcome.value,
        "error": error,
        "released_at": released_at,
        "purge_at": purge_at,
    }


def reservation_from_document(data: Mapping[str, Any]) -> ReservationRecord:
    """Parse a reservation document; raises `MalformedReservationError`."""
    try:
        return ReservationDocument.parse(data).to_record()
    except MalformedDocumentError as exc:
        raise MalformedReservationError(str(exc)) from exc


def reservation_to_document(record: ReservationRecord) -> dict[str, Any]:
    """The document fields for `record` (contract names)."""
    return ReservationDocument.from_record(record).to_document()


# -- accounts and their state -------------------------------------------------------------------


class AccountSettings(StoredDocument):
    """`tenants/{tenant_id}/accounts/{broker_account_id}`: the limits and switches an operator
    sets on one broker account."""

    document_kind = "account"
    malformed = MalformedAccountError

    max_inflight_usd: UsdLimit | None = None
    max_order_notional_usd: UsdLimit | None = None
    allowed_symbols: list[str] | None = None
    denied_symbols: list[str] = Field(default_factory=list)
    max_daily_orders: int | None = Field(default=None, ge=0, le=MAX_DAILY_ORDERS, strict=True)
    """Orders that reach the broker per UTC day, in-flight ones included."""
    max_position_qty: QtyLimit | None = None
    """The largest absolute net position per symbol, from the orders this service placed."""
    trading_mode: AgentMode | None = None
    """Narrows AGENT_MODE for this account (the stricter of the two applies); None: no limit."""

    @field_validator("allowed_symbols", "denied_symbols")
    @classmethod
    def _symbols_as_intents_name_them(cls, value: list[str] | None) -> list[str] | None:
        # Compared with the intent's upper-cased symbol: `["tsla"]` or Alpaca's `BTC/USD` must
        # deny TSLA and BTCUSD, not nothing. An entry that is no symbol makes the document
        # malformed (limits unreadable: rejected), never an entry that silently matches nothing.
        return None if value is None else [ticker(entry.replace("/", "")) for entry in value]


class LeaseEntry(StoredDocument):
    """One entry of an account state's `leases` map."""

    document_kind = "lease"

    client_intent_id: Id
    amount_usd: Amount
    expires_at: Timestamp
    symbol: Text = ""
    side: Text = ""
    qty: Amount = 0.0


class PositionParts(StoredDocument):
    """One entry of an account state's exact positions (`execution.positions`): integers only,
    and never at an int64 bound, where Firestore's increment saturates (the value is lost)."""

    document_kind = "position"

    shares: PositionPart = 0
    billionths: PositionPart = 0

    def billionths_total(self) -> int:
        """The position in billionths."""
        return self.shares * positions.BILLION + self.billionths


class AccountStateDocument(StoredDocument):
    """`tenants/{tenant_id}/execution_inflight/{broker_account_id}`: an account's leases,
    positions and daily counts (see `execution.account_state`)."""

    document_kind = "account state"

    tenant_id: Text | None = None
    broker_account_id: Text | None = None
    updated_at: Timestamp | None = None
    leases: dict[str, LeaseEntry] = Field(default_factory=dict)
    # The two position fields' names are `execution.positions`' EXACT_FIELD and LEGACY_FIELD.
    exact_positions: dict[str, PositionParts] = Field(default_factory=dict)
    """Net quantity placed per symbol, in integers (`execution.positions`)."""
    legacy_positions: dict[str, Signed] = Field(default_factory=dict, alias="positions")
    """Net quantity per symbol as an earlier version summed it in floats: read, never written."""
    placed_orders: dict[str, Count] = Field(default_factory=dict)
    """Orders placed per UTC day ("YYYY-MM-DD")."""

    def to_state(self) -> AccountState:
        """The state acquire decides on."""
        return AccountState(
            leases={
                lease_id: Lease(**entry.model_dump()) for lease_id, entry in self.leases.items()
            },
            positions=self._positions(),
            placed_orders=dict(self.placed_orders),
        )

    def _positions(self) -> dict[str, positions.Position]:
        """Each symbol's position: its exact parts, and a legacy float where one is stored."""
        exact = {symbol: parts.billionths_total() for symbol, parts in self.exact_positions.items()}
        return {
            symbol: positions.Position(exact.get(symbol), self.legacy_positions.get(symbol))
            for symbol in {**exact, **self.legacy_positions}
        }


def state_from_document(data: Mapping[str, Any] | None) -> AccountState:
    """Parse an account-state document (absent: empty); raises `MalformedDocumentError`."""
    return AccountStateDocument.parse(data or {}).to_state()


def leases_to_document(leases: Mapping[str, Lease]) -> dict[str, Any]:
    """The `leases` map for an account-state document."""
    return {
        lease_id: LeaseEntry.parse(_shallow_fields(lease)).to_document()
        for lease_id, lease in leases.items()
    }


# -- orders and the ledger ----------------------------------------------------------------------


class LedgerEntry(StoredDocument):
    """`tenants/{tenant_id}/ledger_trades/{broker_order_id}`: one order this service placed."""

    document_kind = "ledger entry"

    tenant_id: Id
    broker_account_id: Id
    client_intent_id: Id
    broker_order_id: Id
    strategy_id: Text | None = None
    symbol: Text
    side: Text
    qty: Amount
    status: Text
    filled_avg_price: Amount | None = None
    recorded_at: Timestamp


class PaperOrderDocument(StoredDocument):
    """`tenants/{tenant_id}/paper_orders/{client_order_id}`: an order the paper broker filled."""

    document_kind = "paper order"

    broker_order_id: Id
    client_order_id: Id
    broker_account_id: Text | None = None
    symbol: Text
    side: Text
    qty: Amount
    order_type: Text = "market"
    limit_price: Amount | None = None
    time_in_force: Text = "day"
    status: Text
    filled_avg_price: Amount | None = None
    submitted_at: Timestamp | None = None

    @classmethod
    def from_order(cls, order: BrokerOrder, broker_account_id: str) -> PaperOrderDocument:
        """The document of `order`, placed for `broker_account_id`."""
        return cls.parse({**order_fields(order), "broker_account_id": broker_account_id})

    def to_order(self) -> BrokerOrder:
        """The order as a broker answers it."""
        return BrokerOrder(**self.model_dump(exclude={"broker_account_id"}))


# -- operations and market data -----------------------------------------------------------------


class KillSwitchDocument(StoredDocument):
    """`ops/execution_kill_switch` or `tenants/{tenant_id}/ops/execution_kill_switch` (contract).

    It never fails to read, and it fails closed: a switch document that exists is on unless
    `enabled` is exactly `false`. The contract's switch is `{enabled: bool}`, but a switch is
    what an operator writes by hand to stop trading, in a hurry: read by its truth value, `0`,
    `""`, `null`, `{}` or a misspelt `Enabled` let every intent trade while `"false"` halted. A
    document whose `enabled` holds no boolean is on, its `reason` saying so (`kill-switch
    status` shows it). The fields that only describe it read as None where they hold something
    else. A document that does not exist is no switch: `read(None)`.
    """

    document_kind = "kill switch"

    enabled: bool = False
    reason: ShownText = None
    updated_by: ShownText = None
    updated_at: ShownTime = None

    @model_validator(mode="before")
    @classmethod
    def _on_unless_a_boolean_says_off(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or isinstance(data.get("enabled"), bool):
            return data
        held = (
            f"holds {bounded_printable(repr(data['enabled']), 80)}"
            if "enabled" in data
            else "is missing"
        )
        problem = f"on: `enabled` {held}, not true or false"
        reason = _text_or_none(data.get("reason"))
        return {**data, "enabled": True, "reason": f"{problem}; {reason}" if reason else problem}

    @classmethod
    def read(cls, data: Mapping[str, Any] | None) -> KillSwitchDocument:
        """The switch `data` holds, where None (no document) is a switch that is off."""
        return cls.parse({"enabled": False} if data is None else data)


class DeadLetterDocument(StoredDocument):
    """`execution_dead_letters/{dead_letter_id}` (contract): a payload that could never execute,
    stored bounded whatever it held (`execution.dead_letters.dead_letter_fields`)."""

    document_kind = "dead letter"

    message_id: Text
    delivery_sha256: Text = ""
    """What tells the message from any other under the same id (`Delivery.delivery_sha256`)."""
    reason: Text
    data: Text
    truncated: bool = False
    data_bytes: Count = 0
    data_sha256: Text = ""
    attributes: dict[str, str] = Field(default_factory=dict)
    attributes_dropped: Count = 0
    published_at: Timestamp | None = None
    recorded_at: Timestamp


class QuoteDocument(StoredDocument):
    """`market_quotes/{symbol}`: the latest bid and ask, priceable (`quote_problem`)."""

    document_kind = "quote"

    bid: Price
    ask: Price
    ts: Timestamp

    @model_validator(mode="after")
    def _priceable(self) -> Self:
        problem = quote_problem(self.bid, self.ask)
        if problem is not None:
            raise ValueError(problem)
        return self

    def to_quote(self, symbol: str) -> Quote:
        """The quote routing and sizing use."""
        return Quote(symbol=symbol, bid=self.bid, ask=self.ask, ts=self.ts)
