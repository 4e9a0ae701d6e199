"""Per-account settings (`tenants/{tenant_id}/accounts/{broker_account_id}`) and their port."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from execution.errors import StoreUnavailableError
from execution.settings import AgentMode

MAX_LIMIT_USD = 1e12
"""The largest dollar limit an account may set: above any real account, far below overflow."""
MAX_LIMIT_QTY = 1e12
"""The largest position limit in units of the symbol."""
MAX_DAILY_ORDERS = 1_000_000
"""The largest orders-per-day limit."""

# Strict: a limit is a JSON number (an int or a float), never a bool or a string such as "10k"
# or "1e2" that lax parsing would read; finite and bounded, so no sum or comparison with it can
# turn NaN or overflow into "within the limit".
UsdLimit = Annotated[float, Field(ge=0, le=MAX_LIMIT_USD, strict=True, allow_inf_nan=False)]
QtyLimit = Annotated[float, Field(ge=0, le=MAX_LIMIT_QTY, strict=True, allow_inf_nan=False)]


class MalformedAccountError(ValueError):
    """An account document whose settings cannot be read; the message names the fields."""


class AccountSettings(BaseModel):
    """The limits and switches an operator sets on one broker account."""

    # Operators may keep their own fields on the document; we read only ours.
    model_config = ConfigDict(extra="ignore", frozen=True)

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


def parse_account_settings(data: Mapping[str, Any]) -> AccountSettings:
    """The settings an account document holds; raises `MalformedAccountError` naming the fields.

    The one parse of an account document: risk, authority and the acquire's budget all read
    the same finite, bounded numbers, and a malformed document fails them the same way.
    """
    try:
        return AccountSettings.model_validate(dict(data))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()[:5]
        )
        # The pydantic error quotes the values; the fields and rules are what an operator needs.
        raise MalformedAccountError(f"malformed account document: {problems}") from None


@dataclass(frozen=True)
class AccountRead:
    """An account's settings as read once per invocation: absent, present, or unreadable."""

    settings: AccountSettings | None = None
    error: str | None = None
    """Why the settings could not be read; risk then fails closed unless configured open."""
    outage: StoreUnavailableError | None = None
    """Set where the store did not answer: risk raises it (retry) unless configured open."""


class AccountSource(Protocol):
    """Reads an account's settings."""

    def get(self, tenant_id: str, broker_account_id: str) -> AccountSettings | None:
        """The account's settings, None where no document exists.

        Raises `StoreUnavailableError` where the store cannot answer.
        """
        ...
