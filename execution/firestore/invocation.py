"""`FirestoreInvocationStore`: one read at the start of an invocation, the ledger with its release.

At `open`, one `get_all` fetches the documents the common path reads: the account and its
in-flight document (what the acquire decides the budget on), and, unless this instance read them
less than `shared_read_max_age_seconds` ago (`RecentReads`), the symbol's quote and both kill
switches. The reservation itself is not read: the acquire creates it, which fails only where it
exists (a redelivery or a duplicate, which then reads it). The stages answer from that read, and
the ledger entry of a placed order rides on the release's batch. On the common path an intent
costs four round trips (this read, the acquire's commit, the broker, the release) where separate
ports cost eight.

Freshness: the quote and the kill switches are at most `shared_read_max_age_seconds` old when
read from `RecentReads`; the switches are read again if, when the authority asks, their read is
older than that (an acquire that lost races and paused, slow risk queries). So the authority
never decides on a switch read longer ago than that bound; 0 reads them right before the broker.

The account's settings document holds a kill switch too (`trading_mode: OFF`, which
`kill-switch on --account` writes) and the limits risk judges, and it is held to the same bound,
measured when the engine asks for it, which is after the acquire's commit. Why after the commit:
`kill-switch on --cancel-open` waits out that bound (`halt_settle_seconds`), then lists the
scope's leases and answers success where none is live. An intent whose lease was committed
before that listing is in it (or its broker call ended before the broker's listing); one whose
lease was committed after it asks for the account later still, so its read is younger than the
switch. The opening read alone is not enough: an invocation may pause for any time between its
opening read and its acquire (a GC, a throttled CPU, a wait for the account's turn, lost races),
and the third review found exactly that: an account halt the command confirmed, then an order of
the account (`tests/emulator/test_review3_account_halt.py`). On the common path (opening read to
gates in milliseconds) the account costs no second read.

The limits that count what the account holds (`max_inflight_usd`, `max_daily_orders`,
`max_position_qty`) are decided at acquire, on whatever account read that acquire used. Where
the account is read again for the gates and its counting limits are no longer the ones the lease
was admitted under (an operator lowered one meanwhile), the lease must not reach the broker:
`LimitWaitError` (retried; the redelivery is admitted under the limits of its own, fresh read).
So a limit lowered binds every intent whose gates ask for the account more than the bound later.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from google.cloud import firestore

from execution.accounts import AccountSettings
from execution.clock import Clock
from execution.errors import LimitWaitError
from execution.firestore.account_state import limits_from_account
from execution.firestore.accounts import FirestoreAccountSource, account_from_document
from execution.firestore.ledger import ledger_entry, ledger_ref
from execution.firestore.quotes import FirestoreQuoteSource, quote_from_document, quote_ref
from execution.firestore.recent_reads import KeptRead, RecentReads
from execution.firestore.reservations import (
    AdmittedUnder,
    BudgetRead,
    FirestoreReservationHandle,
    FirestoreReservationManager,
    budget_refs,
)
from execution.firestore.staged_writes import StagedWrites
from execution.firestore.support import CallPolicy, snapshot_data, store_errors
from execution.firestore.switches import FirestoreKillSwitches, engaged_switch, switch_refs
from execution.models import BrokerOrder, TradeIntent
from execution.reservations import Acquired, Acquisition, ReservationManager, ReservationRequest
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
        account_read = _ReadAccount(
            (intent.tenant_id, intent.broker_account_id),
            snapshot_data(snaps[account.path]),
            read_at=read_at,
            recent=self._recent,
            monotonic=self._monotonic,
            store=self._accounts,
        )
        reservations: ReservationManager = _OpeningReadReservations(
            self._reservations,
            BudgetRead(snaps[account.path], snaps[inflight.path]),
            staged,
            account_read,
        )
        if self._wrap_reservations is not None:
            reservations = self._wrap_reservations(reservations)
        return FirestoreInvocation(
            reservations=reservations,
            quotes=_ReadQuotes(
                intent.symbol, quote_from_document(intent.symbol, quote_read.data), self._quotes
            ),
            accounts=account_read,
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
        self,
        manager: FirestoreReservationManager,
        budget_read: BudgetRead,
        riders: StagedWrites,
        account: _ReadAccount,
    ) -> None:
        self._manager = manager
        self._budget_read: BudgetRead | None = budget_read
        self._riders = riders
        self._account = account

    def acquire(self, request: ReservationRequest) -> Acquisition:
        budget_read, self._budget_read = self._budget_read, None  # a second call reads afresh
        acquisition = self._manager.acquire(request, budget_read=budget_read, riders=self._riders)
        if isinstance(acquisition, Acquired) and isinstance(
            acquisition.handle, FirestoreReservationHandle
        ):
            self._account.admitted(acquisition.handle.admitted_under)
        return acquisition


class _ReadQuotes:
    def __init__(self, symbol: str, quote: Quote | None, store: FirestoreQuoteSource) -> None:
        self._symbol = symbol
        self._quote = quote
        self._store = store

    def latest(self, symbol: str) -> Quote | None:
        return self._quote if symbol == self._symbol else self._store.latest(symbol)


class _ReadAccount:
    """The account's settings as the gates decide on them: the opening read while it is young,
    else read again; a lease admitted under other counting limits waits (see the module
    docstring)."""

    def __init__(
        self,
        key: tuple[str, str],
        data: dict[str, Any] | None,
        *,
        read_at: float,
        recent: RecentReads,
        monotonic: Callable[[], float],
        store: FirestoreAccountSource,
    ) -> None:
        self._key = key
        self._data = data
        self._read_at = read_at
        self._recent = recent
        self._monotonic = monotonic
        self._store = store
        self._admitted_under: AdmittedUnder | None = None

    def admitted(self, under: AdmittedUnder | None) -> None:
        """The acquire admitted this invocation's lease under `under`."""
        self._admitted_under = under

    def get(self, tenant_id: str, broker_account_id: str) -> AccountSettings | None:
        if (tenant_id, broker_account_id) != self._key:
            return self._store.get(tenant_id, broker_account_id)
        if not self._recent.young(self._read_at):
            read_at = self._monotonic()
            self._data = self._store.document(tenant_id, broker_account_id)
            self._read_at = read_at
            self._check_admission()
        # Parsed when asked, so a malformed document fails the risk stage, as a read would.
        return account_from_document(self._data)

    def _check_admission(self) -> None:
        """Raise `LimitWaitError` where the lease was admitted under counting limits the account
        no longer has: its admission must be decided again, on the account as it is now."""
        under = self._admitted_under
        if under is None:
            return
        now = limits_from_account(self._data)
        if now == under.limits:
            return
        self._admitted_under = None  # said once
        raise LimitWaitError(
            f"account_limits_changed: tenants/{self._key[0]}/accounts/{self._key[1]} changed its "
            f"counting limits while this intent was admitted ({under.limits} -> {now}); "
            "retried, to be admitted under the limits as they are now"
        )


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
