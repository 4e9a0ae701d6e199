"""Per-account settings (`tenants/{tenant_id}/accounts/{broker_account_id}`) and their port."""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field


class AccountSettings(BaseModel):
    """The limits and switches an operator sets on one broker account."""

    # Operators may keep their own fields on the document; we read only ours.
    model_config = ConfigDict(extra="ignore", frozen=True)

    max_inflight_usd: float | None = Field(default=None, ge=0)
    max_order_notional_usd: float | None = Field(default=None, ge=0)
    allowed_symbols: list[str] | None = None
    denied_symbols: list[str] = Field(default_factory=list)


class AccountSource(Protocol):
    """Reads an account's settings."""

    def get(self, tenant_id: str, broker_account_id: str) -> AccountSettings | None:
        """The account's settings, None where no document exists.

        Raises `StoreUnavailableError` where the store cannot answer.
        """
        ...
