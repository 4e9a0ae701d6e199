"""Per-account settings (`tenants/{tenant_id}/accounts/{broker_account_id}`) and their port."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from execution.errors import StoreUnavailableError
from execution.settings import AgentMode


class AccountSettings(BaseModel):
    """The limits and switches an operator sets on one broker account."""

    # Operators may keep their own fields on the document; we read only ours.
    model_config = ConfigDict(extra="ignore", frozen=True)

    max_inflight_usd: float | None = Field(default=None, ge=0)
    max_order_notional_usd: float | None = Field(default=None, ge=0)
    allowed_symbols: list[str] | None = None
    denied_symbols: list[str] = Field(default_factory=list)
    max_daily_orders: int | None = Field(default=None, ge=0)
    """Orders that reach the broker per UTC day, in-flight ones included."""
    max_position_qty: float | None = Field(default=None, ge=0)
    """The largest absolute net position per symbol, from the orders this service placed."""
    trading_mode: AgentMode | None = None
    """Narrows AGENT_MODE for this account (the stricter of the two applies); None: no limit."""


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
