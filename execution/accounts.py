"""Per-account settings (`tenants/{tenant_id}/accounts/{broker_account_id}`) and their port.

The document's model, `AccountSettings`, lives with the others in `execution.documents`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from execution.documents import AccountSettings as AccountSettings
from execution.documents import MalformedAccountError as MalformedAccountError
from execution.errors import StoreUnavailableError


def parse_account_settings(data: Mapping[str, Any]) -> AccountSettings:
    """The settings an account document holds; raises `MalformedAccountError` naming the fields.

    The one parse of an account document: risk, authority and the acquire's budget all read
    the same finite, bounded numbers, and a malformed document fails them the same way.
    """
    return AccountSettings.parse(data)


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
