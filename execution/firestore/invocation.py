"""`FirestoreInvocationStore`: one read at the start of an invocation, the ledger with its release.

At `open`, one `get_all` fetches the documents the common path reads: the account and its
in-flight document (what the acquire decides the budget on), and, unless this instance read them
less than `shared_read_max_age_seconds` ago (`RecentReads`), the symbol's quote and both kill
switches. The reservation itself is not read: the acquire creates it, which fails only where it
exists (a redelivery or a duplicate, which then reads it). The stages answer from that read, and
the ledger entry of a placed order rides on the release's batch. On the common path an intent
costs four round trips (this read, the acquire's commit, the broker, the release) where separate
ports cost eight.

Freshness: the account is as of the invocation's start, a few milliseconds before the broker
call. The quote and the kill switches are at most `shared_read_max_age_seconds` old when read
from `RecentReads`; the switches are read again if, when the authority asks, their read is older
than that (an acquire that lost races and paused, slow risk queries). So the authority never
decides on a switch read longer ago than that bound; 0 reads them right before the broker.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from google.cloud import firestore

from execution.accounts import AccountSettings
from execution.clock import Clock
from execution.firestore.accounts import FirestoreAccountSource, account_from_document
from execution.firestore.ledger import ledger_entry, ledger_ref
from execution.firestore.quotes import FirestoreQuoteSource, quote_from_document, quote_ref
from execution.firestore.recent_reads import KeptRead, RecentReads
from execution.firestore.reservations import BudgetRead, FirestoreReservationManager, budget_refs
from execution.firestore.staged_writes import StagedWrites
from execution.firestore.support import CallPolicy, snapshot_data, store_errors
from execution.firestore.switches import FirestoreKillSwitches, engaged_switch, switch_refs
from execution.models import BrokerOrder, TradeIntent
from execution.reservations import Acquisition, ReservationManager, ReservationRequest
from execution.routing import Quote

DEFAULT_SHARED_READ_MAX_AGE_SECONDS = 1.0


class FirestoreInvocationStore:
    """Opens a `FirestoreInvocation` per intent; see the module docstring."""

    def __init__(
        self,
        db: firestore.Client,
        *,
        reservations: FirestoreReservationManager,
        clock: Clock,
        policy: CallPolicy,
        shared_read_max_age_seconds: float = DEFAULT_SHARED_READ_MAX_AGE_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
        wrap_reservations: Callable[[ReservationManager], ReservationManager] | None = None,
    ) -> None:
        """`wrap_reservations` decorates each invocation's reservations (fail-open, say)."""
        self._db = db
        self._reservations = reservations
        self._clock = clock
        self._policy = policy
        self._recent = RecentReads(max_age_seconds=shared_read_max_age_seconds, monotonic=monotonic)
        self._monotonic = monotonic
        self._wrap_reservations = wrap_reservations
        self._quotes = FirestoreQuoteSource(db, policy=policy)
        self._accounts = FirestoreAccountSource(db, policy=policy)
        self._switches = FirestoreKillSwitches(db, policy=policy)

    def open(self, intent: TradeIntent) -> FirestoreInvocation:
        """Read what `intent`'s path needs in one round trip (see the module docstring)."""
        account, inflight = budget_refs(self._db, intent.tenant_id, intent.broker_account_id)
        quote = quote_ref(self._db, intent.symbol)
        global_switch, tenant_switch = switch_refs(self._db, intent.tenant_id)
        shared = {
            ref.path: self._recent.get(ref.path) for ref in (quote, global_switch, tenant_switch)
        }
        unread = [ref for ref in (quote, global_switch, tenant_switch) if shared[ref.path] is None]
        read_at = self._monotonic()
        with store_errors("invocation read"):
            snaps = {
                snap.reference.path: snap
                for snap in self._db.get_all([account, inflight, *unread], **self._policy.kwargs())
            }
        for ref in unread:
            shared[ref.path] = self._recent.keep(ref.path, snapshot_data(snaps[ref.path]), read_at)
        quote_read, global_read, tenant_read = (
            _kept(shared, ref) for ref in (quote, global_switch, tenant_switch)
        )
        staged = StagedWrites()
        reservations: ReservationManager = _OpeningReadReservations(
            self._reservations, BudgetRead(snaps[account.path], snaps[inflight.path]), staged
        )
        if self._wrap_reservations is not None:
            reservations = self._wrap_reservations(reservations)
        return FirestoreInvocation(
            reservations=reservations,
            quotes=_ReadQuotes(
                intent.symbol, quote_from_document(intent.symbol, quote_read.data), self._quotes
            ),
            accounts=_ReadAccount(
                (intent.tenant_id, intent.broker_account_id),
                snapshot_data(snaps[account.path]),
                self._accounts,
            ),
            switches=_ReadSwitches(
                intent.tenant_id,
                engaged_switch(global_read.data, tenant_read.data),
                read_at=min(global_read.read_at, tenant_read.read_at),
                recent=self._recent,
                store=self._switches,
            ),
            ledger=_StagedLedger(self._db, staged, self._clock),
            flush=lambda: staged.flush(self._db, self._policy),
        )


class FirestoreInvocation:
    """One intent's ports, answering from the opening read; `flush` writes what is staged."""

    def __init__(
        self,
        *,
        reservations: ReservationManager,
        quotes: _ReadQuotes,
        accounts: _ReadAccount,
        switches: _ReadSwitches,
        ledger: _StagedLedger,
        flush: Callable[[], None],
    ) -> None:
        self.reservations = reservations
        self.quotes = quotes
        self.accounts = accounts
        self.switches = switches
        self.ledger = ledger
        self._flush = flush

    def flush(self) -> None:
        """Write the staged ledger entries the release did not carry (fenced, fail-open, down)."""
        self._flush()


class _OpeningReadReservations:
    """The acquire's first attempt decides on the opening read and creates the reservation."""

    def __init__(
        self, manager: FirestoreReservationManager, budget_read: BudgetRead, riders: StagedWrites
    ) -> None:
        self._manager = manager
        self._budget_read: BudgetRead | None = budget_read
        self._riders = riders

    def acquire(self, request: ReservationRequest) -> Acquisition:
        budget_read, self._budget_read = self._budget_read, None  # a second call reads afresh
        return self._manager.acquire(request, budget_read=budget_read, riders=self._riders)


class _ReadQuotes:
    def __init__(self, symbol: str, quote: Quote | None, store: FirestoreQuoteSource) -> None:
        self._symbol = symbol
        self._quote = quote
        self._store = store

    def latest(self, symbol: str) -> Quote | None:
        return self._quote if symbol == self._symbol else self._store.latest(symbol)


class _ReadAccount:
    def __init__(
        self,
        key: tuple[str, str],
        data: dict[str, Any] | None,
        store: FirestoreAccountSource,
    ) -> None:
        self._key = key
        self._data = data
        self._store = store

    def get(self, tenant_id: str, broker_account_id: str) -> AccountSettings | None:
        if (tenant_id, broker_account_id) == self._key:
            # Parsed when asked, so a malformed document fails the risk stage, as a read would.
            return account_from_document(self._data)
        return self._store.get(tenant_id, broker_account_id)


class _ReadSwitches:
    """The switches as read at `read_at`; read again once that is too old to decide on."""

    def __init__(
        self,
        tenant_id: str,
        engaged: str | None,
        *,
        read_at: float,
        recent: RecentReads,
        store: FirestoreKillSwitches,
    ) -> None:
        self._tenant_id = tenant_id
        self._engaged = engaged
        self._read_at = read_at
        self._recent = recent
        self._store = store

    def engaged(self, tenant_id: str) -> str | None:
        if tenant_id == self._tenant_id and self._recent.young(self._read_at):
            return self._engaged
        return self._store.engaged(tenant_id)


class _StagedLedger:
    """Stages the ledger entry for the release's batch instead of writing it."""

    def __init__(self, db: firestore.Client, staged: StagedWrites, clock: Clock) -> None:
        self._db = db
        self._staged = staged
        self._clock = clock

    def record_trade(self, intent: TradeIntent, order: BrokerOrder) -> None:
        self._staged.stage_merge(
            ledger_ref(self._db, intent.tenant_id, order.broker_order_id),
            ledger_entry(intent, order, self._clock()),
        )


def _kept(shared: dict[str, KeptRead | None], ref: firestore.DocumentReference) -> KeptRead:
    kept = shared[ref.path]
    assert kept is not None, f"{ref.path} was neither kept nor read"
    return kept
