"""Per-account limits decided at acquire, against one account-state document.

Why one document: every per-account limit (in-flight budget, orders per UTC day, net position
per symbol) must hold at every instant, counting intents in flight as well as placed ones. Two
concurrent intents can both pass a check only if they read state the other's write does not
change; so the state every limit needs lives in one document per account
(`tenants/{t}/execution_inflight/{account}`), and each acquire writes it in the same
precondition-guarded batch as its reservation. Of two acquires that read the same version, one
commit fails its precondition and reads again: no transaction, no query on the hot path (see
"Contention" in ARCHITECTURE.md). The document holds:

- `leases`: one entry per intent that may have an order the account does not know yet (intent,
  amount, symbol, side, qty, the lease's expiry). An entry is a *hold*: it lives from the acquire
  that admits the intent until the intent's fate at the broker is known, and no longer.
- `exact_positions` (and an earlier version's `positions`): the net quantity per symbol of the
  orders this service placed (bought minus sold), in exact billionths (`execution.positions`).
- `placed_orders`: orders placed per UTC day (`YYYY-MM-DD` → count). An acquire prunes only
  the days before its yesterday: another instance's clock may be a little on the other side of
  midnight, and a day it still counts in (or already counts in) must not be erased.

Days and clocks. Instances' clocks disagree by up to CLOCK_SKEW_SECONDS, and each decides
`max_daily_orders` on its own UTC day's count. So an order counts on every day any instance may
be deciding on, never on none: the instance that records it placed (its release, or a repair
that learns it late) adds it to the day of every moment within the skew of its own clock
(`counted_days`) — one day, or both days around a midnight less than the skew away. Until then
the order is a hold, which every decision counts whatever its day. Hence, for any instance
deciding on day D: every order the broker may hold on D is a hold or in D's count. An order
recorded near midnight thus costs the next day one order of its own (conservative, never
over), and an order recorded long after it was placed (the reconciler settling a hold) counts
on the day it is recorded, not the day it reached the broker: it was a hold until then.

A hold counts in two ways, because the limits are of two kinds:

- The in-flight budget bounds money in our invocations' hands: a hold counts against it only while
  its lease lasts (`expires_at`: the lease's expiry, or its release where the hold outlives it).
  A lapsed lease stops counting at once, before any sweep, so a crash blocks the budget for at
  most one TTL, and a failed trade gives the budget back when it ends, as the contract says.
- Orders per day and net position are counts of what the broker holds: a hold counts against
  them until its fate is known, past its lease's expiry. An invocation that died inside its
  broker call, or whose call's answer was lost (a timeout, garbage after accept), may have placed
  an order: forgetting it at its expiry would let another intent take the account past the limit
  at the broker.

A hold ends when the fate is known: a release of `placed` moves it into `positions` and the day's
count (`firestore.Increment`, in the batch that ends the lease); a release whose attempt knows no
order exists (a gate refused, the broker rejected, no broker call was made), or that its order
can never trade (the broker closed it with nothing filled), drops it; a release
whose fate is unknown keeps it, and so do a death and the sweeper. What keeps it is then settled
by the intent's redelivery (which takes the hold over and asks the broker by client order id
first), by the fenced-release settle, or by the reconciler (`execution.reconciler`), which asks the
broker for each hold whose last broker call can no longer land. Positions live here, not in the
reservations, so the TTL policy purging old reservations never resets them.

Every account keeps its positions (`execution.positions`: exact integers per symbol, and the
floats an earlier version summed) and `placed_orders`, limited or not. Keeping them only once a
limit is set would spare an account without limits one write per placed order (two increments
merged into the release's batch: ~40 µs of client CPU, `execution.firestore.lean_writes`) and
the decoding of a small document at each opening read; but a limit set later would then have
to learn the account's past from its reservations, which the TTL policy purges after
RESERVATION_RETENTION_DAYS (an older position would silently reset to what is left, the very
fault #12 closed), and an intent acquired before the limit was set and placed after the
back-fill was read would be counted by neither. So the counts are kept from the first order on.
Only today's `placed_orders` count is decided on, and yesterday's is kept for an instance whose
clock is still on it (`first_kept_day`): an admission rewrites the map to those two days, and a
placed release deletes the older days it saw when its acquire read the state (an account
without limits admits only its new symbols), so the map never grows by a key per trading day.

Size. The document has Firestore's 1 MiB limit (the emulator enforces it by the same rules), and
a document that cannot be written stops the account: the release of `placed` writes it in the
batch that records the order, so a release refused for size would fail whole on every retry and
leave a placed order's record unwritten (measured: a batch whose merge takes the document past
1 MiB fails `InvalidArgument`, its other writes with it). So the document grows through
admissions, each decided on the size it would leave (`state_bytes`, by Firestore's storage-size
rules, with the document name and ids at their longest, and for each hold the position entry its
order may add): at most MAX_STATE_BYTES (512 KiB).

- An intent whose symbol has no exact position entry yet (`adds_position_entry`) takes a hold on
  every account, limited or not: its placed order adds an entry, so it holds the room first. An
  account without limits writes nothing at acquire otherwise (its orders on symbols it holds add
  no key: a release increments the entry in place).
- Over the cap, the admission removes closed positions (exactly 0: with exact integers a zero is
  a true zero) and writes the positions whole, under the precondition of its write, so a
  concurrent increment makes it read again rather than be lost. Removal only then: a release of
  an order admitted without a hold re-adds its symbol's entry (an absent entry counts as 0, so
  the value stays right), uncounted by any admission.
- Still over it, the intent waits where holds of other intents fill the document
  (`account_state_full`, retried: as holds end, by their releases or the reconciler once the
  broker answers, room returns), and is refused where the positions and day counts alone leave
  no room (`account_state_full`, `rejected`: the account trades the symbols it holds until some
  close).

A release or a settlement ends a hold (its entry, 89 bytes or more, leaves; its position entry
was counted; day counts of 19 bytes may arrive) or rewrites it at the same size. So the
document leaves an admission's count only by (a) day counts of an account without limits (at
most three keys, 71 bytes), (b) entries re-added after a removal, one per symbol removed while an
order admitted without a hold was in flight on it, and (c) at a deploy, new symbols of intents
an earlier version admitted without a hold. The other half of the 1 MiB takes about 7,800
entries of 32-character symbols (67 bytes each: `tests/emulator/test_positions_exact.py`)
before any write could be refused for size.

Each limit is decided on the worst case: every hold is assumed to be placed. Where the limit
fails even with no hold, it can never pass while the state lasts: the intent is refused (outcome
`rejected` with the named reason). Where only holds make it fail, it may pass once they end: the
delivery waits (`LimitWaitError`, retried by Pub/Sub).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from execution.errors import BudgetWaitError, InvalidIntentError, LimitWaitError
from execution.models import EXACT_MONEY, money_decimal
from execution.positions import (
    Position,
    limit_billionths,
    positions_fields,
    shares_text,
    to_billionths,
)

DEFAULT_CLOCK_SKEW_SECONDS = 5.0
"""CLOCK_SKEW_SECONDS's default: how far instances' clocks may disagree."""

FIRESTORE_DOCUMENT_LIMIT_BYTES = 1_048_576
"""Firestore's maximum document size (1 MiB), by its storage-size rules (`stored_bytes`)."""
MAX_STATE_BYTES = 512 * 1024
"""The cap on the account-state document an admission may leave (see "Size" above)."""
_LONGEST_ID = "x" * 128


@dataclass(frozen=True)
class Lease:
    """One hold in an account's state document: an intent whose order the account may not know."""

    client_intent_id: str
    amount_usd: float
    expires_at: datetime
    symbol: str = ""
    side: str = ""
    qty: float = 0.0

    def signed_qty(self) -> float:
        """The quantity this lease adds to its symbol's net position once placed."""
        return self.qty if self.side == "buy" else -self.qty


@dataclass(frozen=True)
class Hold:
    """Where one hold lives and whose it is: what the reconciler settles once its lease lapsed.
    `symbol`, `side` and `qty` are the order it stands for (an order found under its client
    order id must match them to be counted as its)."""

    tenant_id: str
    broker_account_id: str
    lease_id: str
    client_intent_id: str
    expires_at: datetime
    symbol: str = ""
    side: str = ""
    qty: float = 0.0


@dataclass(frozen=True)
class UnreadableState:
    """An account-state document whose holds cannot be read (an operator's edit): reported in
    its place, so that one bad document never stops the holds of every other account."""

    path: str
    problem: str


@dataclass(frozen=True)
class AccountLimits:
    """The limits acquire enforces; None: not set."""

    max_inflight_usd: float | None = None
    max_daily_orders: int | None = None
    max_position_qty: float | None = None

    def any(self) -> bool:
        """True where at least one limit needs the account state."""
        return any(
            limit is not None
            for limit in (self.max_inflight_usd, self.max_daily_orders, self.max_position_qty)
        )


@dataclass
class AccountState:
    """An account's state document, parsed."""

    leases: dict[str, Lease] = field(default_factory=dict)
    positions: dict[str, Position] = field(default_factory=dict)
    placed_orders: dict[str, int] = field(default_factory=dict)

    def active(self, now: datetime) -> dict[str, Lease]:
        """The holds that count against the budget: a lapsed one stops at once, before any sweep."""
        return _live(self.leases, now)


def utc_day(moment: datetime) -> str:
    """The `placed_orders` key of `moment`'s UTC day."""
    return moment.date().isoformat()


def counted_days(placed_at: datetime, skew: timedelta) -> tuple[str, ...]:
    """The `placed_orders` keys an order placed at `placed_at` (by the clock of the instance
    that records it) counts on: the UTC day of every moment within `skew` of it. Any instance's
    clock is within `skew` of the recorder's, so each day an instance may be deciding on while
    the order is recorded (or later) counts it; near midnight that is two days, else one."""
    return tuple(sorted({utc_day(placed_at - skew), utc_day(placed_at + skew)}))


def first_kept_day(moment: datetime) -> str:
    """The oldest `placed_orders` key kept at `moment`: yesterday's. Instances' clocks differ by
    up to CLOCK_SKEW_SECONDS, so at midnight one may still admit on the day another has left:
    the old day's count must outlive the new day's first writes, or it reads as empty."""
    return utc_day(moment - timedelta(days=1))


def _recent_days(state: AccountState, now: datetime) -> dict[str, int]:
    oldest = first_kept_day(now)
    return {day: count for day, count in state.placed_orders.items() if day >= oldest}


@dataclass(frozen=True)
class Admitted:
    """The lease fits every limit: the state to write with the reservation. `positions`, where
    not None, is written whole too: closed positions the admission removed for room."""

    leases: dict[str, Lease]
    placed_orders: dict[str, int]
    positions: dict[str, Position] | None = None


@dataclass(frozen=True)
class Refused:
    """A limit the intent can never pass while the state lasts: outcome `rejected`."""

    reason: str


Verdict = Refused | LimitWaitError | None
"""A check's answer: refused for good, wait, or None where it passes."""


def check_lease(lease: Lease) -> None:
    """Refuse an amount or quantity that is not finite and non-negative, rather than sum it."""
    for name, value in (("amount_usd", lease.amount_usd), ("qty", lease.qty)):
        if not math.isfinite(value) or value < 0:
            raise InvalidIntentError(
                f"intent {lease.client_intent_id!r} has {name}={value!r}: a limit can only count "
                "finite, non-negative numbers"
            )


def admit(
    state: AccountState, *, now: datetime, lease_id: str, lease: Lease, limits: AccountLimits
) -> Admitted | Refused:
    """Decide `lease` against every limit; raises `LimitWaitError` where it must wait."""
    check_lease(lease)
    # The same intent's earlier hold is taken over, never counted twice: this lease holds
    # whatever an earlier attempt may have placed under the same client order id.
    others = {
        lid: held
        for lid, held in state.leases.items()
        if held.client_intent_id != lease.client_intent_id
    }
    today = utc_day(now)
    placed_today = state.placed_orders.get(today, 0)
    days = {**_recent_days(state, now), today: placed_today}
    positions, size = _with_room(state.positions, {**others, lease_id: lease}, days)
    placed = state.positions.get(lease.symbol, Position())
    checks = (
        _budget(_live(others, now), lease, limits.max_inflight_usd),
        _daily_orders(others, placed_today, limits.max_daily_orders, now),
        _position(others, placed, lease, limits.max_position_qty, now),
        _room(others, lease_id, lease, positions, days, size, now),
    )
    refusals = [check for check in checks if isinstance(check, Refused)]
    if refusals:
        return refusals[0]
    waits = [check for check in checks if isinstance(check, LimitWaitError)]
    if waits:
        raise waits[0]
    pruned = None if positions is state.positions else positions
    return Admitted({**others, lease_id: lease}, days, pruned)


def adds_position_entry(positions: dict[str, Position], symbol: str) -> bool:
    """Whether a placed order of `symbol` adds an entry to the document's exact positions: an
    intent that would must hold its room first, on every account ("Size" above)."""
    held = positions.get(symbol)
    return held is None or held.exact is None


def stored_bytes(value: object) -> int:
    """`value`'s size as Firestore counts it against its document limit: a string its UTF-8
    bytes plus one, a number or timestamp 8, a boolean or null 1, a map its keys (as strings)
    and values."""
    if isinstance(value, str):
        return len(value.encode()) + 1
    if isinstance(value, dict):
        return sum(stored_bytes(str(key)) + stored_bytes(item) for key, item in value.items())
    if isinstance(value, bool) or value is None:
        return 1
    return 8  # int, float, datetime


def state_bytes(state: AccountState) -> int:
    """The largest the account-state document holding `state` can be (ids at their longest)."""
    leases = {
        lease_id: {
            "client_intent_id": held.client_intent_id,
            "amount_usd": held.amount_usd,
            "expires_at": held.expires_at,
            "symbol": held.symbol,
            "side": held.side,
            "qty": held.qty,
        }
        for lease_id, held in state.leases.items()
    }
    # The document name: each path segment's size, plus 16; every document's 32 bytes.
    segments = ("tenants", _LONGEST_ID, "execution_inflight", _LONGEST_ID)
    name = sum(stored_bytes(segment) for segment in segments) + 16 + 32
    # Each hold may yet add its symbol's exact entry: counted now, so that no release grows the
    # document past what an admission decided on.
    pending = {
        held.symbol: state.positions.get(held.symbol, Position()).plus(0)
        for held in state.leases.values()
        if adds_position_entry(state.positions, held.symbol)
    }
    fields = {
        "tenant_id": _LONGEST_ID,
        "broker_account_id": _LONGEST_ID,
        "updated_at": 0,
        "leases": leases,
        **positions_fields({**state.positions, **pending}),
        "placed_orders": state.placed_orders,
    }
    return name + stored_bytes(fields)


def _with_room(
    positions: dict[str, Position], leases: dict[str, Lease], days: dict[str, int]
) -> tuple[dict[str, Position], int]:
    """`positions`, less the closed ones where the document would not fit under the cap with
    them (removed only then: see "Size" above), and the size of the document they leave."""
    size = state_bytes(AccountState(leases, positions, days))
    if size <= MAX_STATE_BYTES:
        return positions, size
    kept = {symbol: held for symbol, held in positions.items() if not held.closed()}
    if len(kept) == len(positions):
        return positions, size
    return kept, state_bytes(AccountState(leases, kept, days))


def _room(
    others: dict[str, Lease],
    lease_id: str,
    lease: Lease,
    positions: dict[str, Position],
    days: dict[str, int],
    size: int,
    now: datetime,
) -> Verdict:
    """The document the admission would write (`size` bytes) must stay under MAX_STATE_BYTES."""
    if size <= MAX_STATE_BYTES:
        return None
    alone = state_bytes(AccountState({lease_id: lease}, positions, days))
    if alone > MAX_STATE_BYTES:
        return Refused(
            f"account_state_full: the account's state document would hold {alone} bytes "
            f"(cap {MAX_STATE_BYTES}) with no other intent in flight: positions of "
            f"{len(positions)} symbols fill it and none is closed; no order of a symbol it "
            "does not hold can be recorded"
        )
    return LimitWaitError(
        f"account_state_full: the account's state document would hold {size} bytes (cap "
        f"{MAX_STATE_BYTES}) with {len(others)} intents in flight"
        f"{_unknown_note(others, now)}; waiting until some end"
    )


def _live(holds: dict[str, Lease], now: datetime) -> dict[str, Lease]:
    return {lid: held for lid, held in holds.items() if held.expires_at > now}


def _unknown_note(holds: dict[str, Lease], now: datetime) -> str:
    """How many `holds` outlived their lease: orders of unknown fate, for the wait's message."""
    lapsed = len(holds) - len(_live(holds, now))
    if not lapsed:
        return ""
    return (
        f" ({lapsed} of unknown fate: their lease lapsed; a redelivery or `python -m execution "
        "reconcile` settles them)"
    )


def _budget(others: dict[str, Lease], lease: Lease, limit: float | None) -> Verdict:
    """Decided in exact decimals, since a float sum rounds and may cross the limit either way:
    4797785.325233454 + 5202214.674766547 is 1e7 in floats, a billionth over a $10M cap in
    decimals; 0.1 + 0.2 is over a 0.3 cap in floats, at it in decimals. Each amount counts as
    its `money_decimal`, at least its exact worth (`worth_usd`); the limit as written."""
    if limit is None:
        return None
    cap, amount = money_decimal(limit), money_decimal(lease.amount_usd)
    if amount > cap:
        return Refused(f"max_inflight_usd_exceeded: {lease.amount_usd:g} > {limit:g} USD")
    committed = _usd_sum(held.amount_usd for held in others.values())
    if EXACT_MONEY.add(committed, amount) > cap:
        return BudgetWaitError(
            f"account in-flight budget {limit:g} USD holds {float(committed):g} USD; "
            f"{lease.amount_usd:g} USD more must wait until a lease ends"
        )
    return None


def _usd_sum(values: Iterable[float]) -> Decimal:
    """The exact sum of the decimals of `values` (`money_decimal`): never rounded."""
    total = Decimal(0)
    for value in values:
        total = EXACT_MONEY.add(total, money_decimal(value))  # the default rounds at 28 digits
    return total


def _daily_orders(
    others: dict[str, Lease], placed: int, limit: int | None, now: datetime
) -> Verdict:
    if limit is None:
        return None
    if placed + 1 > limit:
        return Refused(f"max_daily_orders_reached: {placed} of {limit} used today (UTC)")
    if placed + len(others) + 1 > limit:
        return LimitWaitError(
            f"max_daily_orders {limit}: {placed} placed today and {len(others)} in flight"
            f"{_unknown_note(others, now)}; waiting until an intent in flight ends"
        )
    return None


def _position(
    others: dict[str, Lease], placed: Position, lease: Lease, limit: float | None, now: datetime
) -> Verdict:
    """Decided in exact billionths of a share (`execution.positions`), on the worse end of the
    placed position for this order's direction, against the limit as written: no tolerance."""
    if limit is None:
        return None
    # Only same-direction leases in flight can push the position further; opposite ones might
    # never be placed, so they are not counted as room.
    direction = 1 if lease.side == "buy" else -1
    same_way_holds = {
        lid: held
        for lid, held in others.items()
        if held.symbol == lease.symbol and held.side == lease.side
    }
    same_way = sum(to_billionths(held.qty) for held in same_way_holds.values())
    low, high = placed.bounds()
    worst = high if lease.side == "buy" else low  # the end the order pushes further
    alone = direction * (worst + to_billionths(lease.signed_qty()))
    cap = limit_billionths(limit)
    if alone > cap:
        # An order that shrinks the position never crosses the limit this way: it is allowed.
        return Refused(f"max_position_exceeded: {shares_text(abs(alone))} > {limit:g}")
    if alone + same_way > cap:
        return LimitWaitError(
            f"max_position_qty {limit:g} ({lease.symbol}): {shares_text(worst)} "
            f"placed and {shares_text(same_way)} {lease.side} in flight"
            f"{_unknown_note(same_way_holds, now)}; waiting until an intent in flight ends"
        )
    return None
