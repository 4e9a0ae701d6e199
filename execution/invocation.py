"""The unit of work of one invocation: the store as the engine's stages see it for one intent.

The engine opens one `Invocation` per intent and reaches the reservation, the quote, the account,
the kill switches and the ledger through it, then calls `flush` once the reservation is released.
That lets a store adapter read every document the stages need in one round trip at the start and
write the ledger entry with the release (`execution.firestore.invocation`).
"""

from __future__ import annotations

from typing import Protocol

from execution.accounts import AccountSource
from execution.authority import KillSwitchSource
from execution.ledger import Ledger
from execution.models import TradeIntent
from execution.reservations import ReservationManager
from execution.routing import QuoteSource


class Invocation(Protocol):
    """One intent's view of the store, from `InvocationStore.open` to `flush`."""

    @property
    def reservations(self) -> ReservationManager: ...

    @property
    def quotes(self) -> QuoteSource: ...

    @property
    def accounts(self) -> AccountSource: ...

    @property
    def switches(self) -> KillSwitchSource: ...

    @property
    def ledger(self) -> Ledger:
        """May hold its writes until the release or `flush`, rather than write at once."""
        ...

    def flush(self) -> None:
        """Write what is still held (the release did not carry it); raises if the store is down."""
        ...


class InvocationStore(Protocol):
    """Opens one `Invocation` per intent."""

    def open(self, intent: TradeIntent) -> Invocation:
        """The store as `intent`'s stages will see it.

        Raises `StoreUnavailableError` where a read made at open fails; nothing is held yet, so
        the delivery is retried.
        """
        ...
