"""The chaos workload: one seeded plan of messages and faults, identical for the same seed and size.

`build_plan(seed, n)` draws everything from `random.Random(seed)`: the accounts' budgets and risk
limits (in-flight budget, orders per day, position), `n` intents of every kind the engine can end
in (trades, dry runs, a halted tenant, risk rejections, stale and malformed payloads, reused ids
with another payload), how often and when each is published and to which push subscription, and
the faults on a timeline: broker faults, Firestore outages, killed function processes, clock
jumps and zombie storms (a function process paused past a lease at a planned point of a broker
call while the other takes the intent over, the intent turning stale or a kill switch turning on
meanwhile). The seed fixes the plan, not the interleaving:
the processes race for real, so a seed replays the same storm, not the same thread schedule.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from devtools import alpaca_sandbox
from devtools.alpaca_sandbox import Fault
from execution.models import TradeIntent

STALE_EPOCH = datetime(2025, 1, 2, 15, 30, tzinfo=UTC)

SYMBOLS = ("AAPL", "MSFT", "NVDA", "AMZN", "GOOG", "TSLA", "META", "BRK.B")
QUOTE = {"bid": 0.9999, "ask": 1.0}
"""`market_quotes/{symbol}` for every symbol: tight (1 bp), and cheap enough that a market order
of 1-4 shares is worth less than the notional it declares, so the declared amount is reserved."""
QUOTE_MAX_AGE_SECONDS = 3600.0
"""The quotes are seeded once, before the storm: they must stay fresh for the router throughout."""

TOPIC_BOTH = "both"
"""One topic with two push subscriptions: every message reaches both function processes at once."""
TOPIC_S1 = "s1"
TOPIC_S2 = "s2"
TOPICS = (TOPIC_BOTH, TOPIC_S1, TOPIC_S2)


@dataclass(frozen=True)
class Timing:
    """The functions' settings: short, so that leases lapse and retries happen within a test."""

    function_timeout: float = 6.0
    broker_timeout: float = 4.0
    ttl: float = 9.0
    firestore_timeout: float = 2.0
    intent_max_age: float = 1800.0
    """Long: on a busy machine a large run's outages back Pub/Sub's pushes off for minutes, and
    a trade meant to execute would end `stale` (the `stale` kind is dated far in the past)."""
    clock_skew: float = 1.0
    """The processes share one machine's clock; the broker call still needs room in the lease."""

    def env(self) -> dict[str, str]:
        """The settings as the functions read them."""
        return {
            "FUNCTION_TIMEOUT_SECONDS": f"{self.function_timeout:g}",
            "BROKER_TIMEOUT_SECONDS": f"{self.broker_timeout:g}",
            "RESERVATION_TTL_SECONDS": f"{self.ttl:g}",
            "FIRESTORE_TIMEOUT_SECONDS": f"{self.firestore_timeout:g}",
            "INTENT_MAX_AGE_SECONDS": f"{self.intent_max_age:g}",
            "CLOCK_SKEW_SECONDS": f"{self.clock_skew:g}",
            "ROUTER_QUOTE_MAX_AGE_SECONDS": f"{QUOTE_MAX_AGE_SECONDS:g}",
        }


@dataclass(frozen=True)
class Account:
    """`tenants/{tenant_id}/accounts/{account_id}`: an in-flight budget and risk limits."""

    tenant_id: str
    account_id: str
    max_inflight_usd: float | None
    max_order_notional_usd: float
    max_daily_orders: int | None = None
    max_position_qty: float | None = None
    symbols: tuple[str, ...] = SYMBOLS
    """What its intents trade: few symbols make a position limit bind."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.tenant_id, self.account_id)

    @property
    def counted_limits(self) -> dict[str, float]:
        """The limits the broker's order book is held to (orders per UTC day, net position)."""
        limits = {
            "max_daily_orders": self.max_daily_orders,
            "max_position_qty": self.max_position_qty,
        }
        return {name: float(value) for name, value in limits.items() if value is not None}

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"max_order_notional_usd": self.max_order_notional_usd}
        optional = {
            "max_inflight_usd": self.max_inflight_usd,
            "max_daily_orders": self.max_daily_orders,
            "max_position_qty": self.max_position_qty,
        }
        doc.update({name: value for name, value in optional.items() if value is not None})
        return doc


@dataclass(frozen=True)
class Message:
    """One publish: raw data, when (seconds into the phase) and to which subscription(s)."""

    kind: str
    data: bytes
    at: float
    topic: str
    intent_id: str | None = None
    payload_hash: str | None = None
    account: tuple[str, str] | None = None


@dataclass(frozen=True)
class BrokerFault:
    """Queue `fault` on the broker for the next request of `method` at time `at`."""

    at: float
    method: str
    label: str
    fault: Fault


@dataclass(frozen=True)
class Outage:
    """Firestore unreachable from the functions for `duration` s; the emulator restarts inside.

    Long enough that an invocation whose broker call returns during it also fails its ledger
    write and its release (one `FIRESTORE_TIMEOUT_SECONDS` each) before the store is back.
    """

    at: float
    duration: float
    victims: tuple[Message, ...] = ()
    """Published by the outage itself, so that broker calls are in flight when the store goes."""


@dataclass(frozen=True)
class Kill:
    """SIGKILL these function servers (1, 2) while broker calls hang, then start them again."""

    at: float
    servers: tuple[int, ...]
    victims: tuple[Message, ...] = ()
    """Published by the kill itself, one to each server killed, to be mid-call when it dies."""


@dataclass(frozen=True)
class ClockJump:
    """A sweep whose clock reads `seconds` ahead: every live lease looks lapsed to it."""

    at: float
    seconds: float


@dataclass(frozen=True)
class Zombie:
    """The staged take-over: an invocation outlives its lease while a newer attempt holds it."""

    account: Account
    payload: dict[str, Any]
    second_hang: float
    """The taker's broker call: long enough that the first attempt releases while it holds."""


PAUSE_POINTS = ("before", "inside", "after")
"""Where a storm pauses its first attempt: right before the broker call (past the lease-room
check), inside it (the broker accepted the order and holds the answer), after the answer (before
the release)."""
TRANSITIONS = ("none", "stale", "halt_global", "halt_tenant", "halt_account")
"""What changes while the first attempt is paused: nothing, the intent's age passes
INTENT_MAX_AGE_SECONDS, or a kill switch (global, tenant) or the account's trading mode (OFF)
turns on until the take-over has ended the intent."""
BURST_SIZE = 4
"""Intents published at once on each limited account, more than its limits admit together."""


def burst_topic(index: int) -> str:
    """A topic of its own for each intent of a burst (the emulator pushes one message at a time
    per subscription): the burst reaches the servers at once."""
    return f"burst-{index}"


STORM_SPAN = 15.0
"""A storm's length: reaching the pause, one lease TTL paused, the take-over, the resume."""
STALE_MARGIN = 8.0
"""A stale storm's intent is this many seconds short of INTENT_MAX_AGE_SECONDS when published:
fresh for the first attempt, stale for the take-over a lease later."""


@dataclass(frozen=True)
class ZombieStorm:
    """Pause server `server`'s attempt at `point`, past its lease, while the other takes over."""

    at: float
    point: str
    transition: str
    server: int
    account: Account
    payload: dict[str, Any]
    """Without `created_at`: a stale storm dates it when it publishes (see STALE_MARGIN)."""


@dataclass(frozen=True)
class Plan:
    """Everything one chaos run does, derived from (seed, n)."""

    seed: int
    n: int
    timing: Timing
    window: float
    accounts: tuple[Account, ...]
    halted_tenants: tuple[str, ...]
    messages: tuple[Message, ...]
    broker_faults: tuple[BrokerFault, ...]
    outages: tuple[Outage, ...]
    kills: tuple[Kill, ...]
    jumps: tuple[ClockJump, ...]
    zombie: Zombie
    storms: tuple[ZombieStorm, ...] = ()
    kinds: dict[str, int] = field(default_factory=dict)

    def account(self, key: tuple[str, str]) -> Account:
        return next(a for a in self.accounts if a.key == key)

    def summary(self) -> str:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.kinds.items()))
        faults: dict[str, int] = {}
        for f in self.broker_faults:
            faults[f.label] = faults.get(f.label, 0) + 1
        fault_text = ", ".join(f"{k} {v}" for k, v in sorted(faults.items()))
        return (
            f"{self.n} intents ({kinds}); {len(self.messages)} messages over {self.window:.0f} s; "
            f"broker faults: {fault_text}; Firestore outages {len(self.outages)}; "
            f"kills {len(self.kills)}; clock jumps {len(self.jumps)}; staged zombie take-over 1; "
            "zombie storms "
            + ", ".join(f"{s.point}/{s.transition} on S{s.server}" for s in self.storms)
        )


KIND_WEIGHTS = {
    "trade": 0.52,
    "dry_run": 0.10,
    "halted": 0.08,
    "risk_rejected": 0.08,
    "stale": 0.07,
    "malformed": 0.08,
    "conflict": 0.07,
}


def _fault_menu(timing: Timing) -> list[tuple[str, str, float, Any]]:
    """(label, method, weight, factory(rng)) for every broker fault class."""
    below = timing.broker_timeout * 0.5
    beyond = timing.broker_timeout + 1.5
    return [
        ("POST 503", "POST", 3.0, lambda r: alpaca_sandbox.status(503, "service unavailable")),
        (
            "POST 500 after accept",
            "POST",
            2.0,
            lambda r: alpaca_sandbox.status(500, "internal error", accept=True),
        ),
        ("POST 422 reject", "POST", 1.5, lambda r: alpaca_sandbox.status(422, "insufficient qty")),
        (
            "POST slow accept",
            "POST",
            1.0,
            lambda r: alpaca_sandbox.hang_after_accept(r.uniform(0.2, below)),
        ),
        (
            "POST timeout after accept",
            "POST",
            2.0,
            lambda r: alpaca_sandbox.hang_after_accept(r.uniform(beyond, beyond + 2)),
        ),
        (
            "POST malformed after accept",
            "POST",
            1.0,
            lambda r: alpaca_sandbox.malformed_json_after_accept(),
        ),
        ("POST drop after accept", "POST", 1.5, lambda r: alpaca_sandbox.drop_after_accept()),
        ("GET 503", "GET", 1.0, lambda r: alpaca_sandbox.status(503, "service unavailable")),
        (
            "GET hang",
            "GET",
            0.5,
            lambda r: alpaca_sandbox.hang_after_accept(r.uniform(beyond, beyond + 1)),
        ),
    ]


def _accounts(n: int, storms: int) -> tuple[tuple[Account, ...], tuple[str, ...], Account, Account]:
    accounts = (
        Account("acme", "acct-1", 300.0, 250.0),
        Account("acme", "acct-2", 200.0, 160.0),
        Account("acme", "acct-open", None, 250.0),
        Account("globex", "acct-1", 250.0, 200.0),
        Account("globex", "acct-2", 400.0, 300.0),
        Account("halted-co", "acct-1", 300.0, 250.0),
        # Limits that bind: about 1 in 14 intents trades here, two symbols of 1-4 shares each.
        Account("limits-co", "acct-pos", 400.0, 250.0, max_position_qty=5, symbols=SYMBOLS[:2]),
        Account("limits-co", "acct-daily", 400.0, 250.0, max_daily_orders=max(3, n // 25)),
    )
    zombie = Account("acme", "acct-zombie", 1000.0, 1000.0)
    # Room for every storm's order; the limits still count each zombie's order at the broker.
    storm = Account(
        "storm-co",
        "acct-1",
        50.0,
        50.0,
        max_daily_orders=storms,
        max_position_qty=4,
        symbols=SYMBOLS[:1],
    )
    return (*accounts, zombie, storm), ("halted-co",), zombie, storm


def _order_fields(rng: random.Random, amount: float, symbols: tuple[str, ...]) -> dict[str, Any]:
    """A limit order worth `amount`, or a market order declaring `notional_usd` = `amount`.

    A market order is valued at the quote too (`QUOTE`, seeded for every symbol, worth less than
    any declared amount here), and reserves the larger of the two: the declared one.
    """
    qty = rng.randint(1, 4)
    side = rng.choice(("buy", "sell"))
    symbol = rng.choice(symbols)
    if rng.random() < 0.75:
        price = round(amount / qty, 2)
        return {
            "symbol": symbol,
            "side": side,
            "qty": qty,
            "order_type": "limit",
            "limit_price": price,
        }
    return {
        "symbol": symbol,
        "side": side,
        "qty": qty,
        "order_type": "market",
        "notional_usd": round(amount, 2),
    }


def payload_hash(payload: dict[str, Any]) -> str:
    """The engine's own digest of a payload (it decides duplicate vs conflict)."""
    return TradeIntent.model_validate(payload).payload_hash()


def _malformed(rng: random.Random, tenant: str, account: str, index: int) -> bytes:
    base = {
        "tenant_id": tenant,
        "broker_account_id": account,
        "client_intent_id": f"bad-{index:05d}",
        "symbol": "AAPL",
        "side": "buy",
        "qty": 1,
        "order_type": "limit",
        "limit_price": 10.0,
    }
    variant = rng.randrange(7)
    if variant == 0:
        return b"not json {"
    if variant == 1:
        return json.dumps([base]).encode()
    if variant == 2:
        return json.dumps({k: v for k, v in base.items() if k != "symbol"}).encode()
    if variant == 3:
        return json.dumps({**base, "client_intent_id": "../escape"}).encode()
    if variant == 4:
        return json.dumps({k: v for k, v in base.items() if k != "limit_price"}).encode()
    if variant == 5:
        return json.dumps({**base, "dryrun": True}).encode()
    return json.dumps({**base, "qty": -1}).encode()


def _free_times(
    rng: random.Random,
    count: int,
    low: float,
    high: float,
    busy: list[tuple[float, float]],
    span: float,
    gap: float,
) -> list[float]:
    """`count` start times in [low, high] for events lasting `span` s, `gap` s clear of `busy`.

    Each chosen event is added to `busy`. Crowded, the gap narrows and then goes, rather than
    the event being dropped: every planned disruption happens.
    """
    chosen: list[float] = []
    for _ in range(count):
        for attempt in range(600):
            t = rng.uniform(low, high)
            needed = gap if attempt < 200 else gap / 2 if attempt < 400 else -span
            if all(t + span + needed <= start or t >= end + needed for start, end in busy):
                break
        chosen.append(t)
        busy.append((t, t + span))
    return sorted(chosen)


def build_plan(seed: int, n: int, timing: Timing | None = None) -> Plan:
    """The whole run for `seed` and `n` intents."""
    timing = timing or Timing()
    rng = random.Random(seed)
    # Two at the default size (each pauses a server for a lease: the CI run stays short), one
    # more per 80 intents: `make chaos N=1000` plays every point and transition several times.
    storm_count = 2 + n // 80
    accounts, halted, zombie_account, storm_account = _accounts(n, storm_count)
    special = (zombie_account, storm_account)
    tradable = [a for a in accounts if a.tenant_id not in halted and a not in special]
    halted_accounts = [a for a in accounts if a.tenant_id in halted]
    # Storms pause a server each, so they cannot overlap: the window fits them all.
    window = max(28.0, n * 0.25, storm_count * (STORM_SPAN + 1.0) + 4.0)
    # Any instant far enough back is stale; a fixed one keeps the payloads a function of the seed.
    stale_born = STALE_EPOCH

    messages: list[Message] = []
    kinds: dict[str, int] = {}
    names = list(KIND_WEIGHTS)
    weights = [KIND_WEIGHTS[k] for k in names]

    def publish_copies(kind: str, payload: dict[str, Any], at: float, copies: int) -> None:
        data = json.dumps(payload).encode()
        digest = payload_hash(payload)
        key = (payload["tenant_id"], payload["broker_account_id"])
        for copy in range(copies):
            when = at
            if copy:
                # Some copies race the first one; others come back after it has finished.
                when = at + (rng.uniform(0.0, 0.2) if rng.random() < 0.6 else rng.uniform(1, 6))
            messages.append(
                Message(
                    kind=kind,
                    data=data,
                    at=when,
                    topic=rng.choices(TOPICS, weights=(0.4, 0.3, 0.3))[0],
                    intent_id=payload["client_intent_id"],
                    payload_hash=digest,
                    account=key,
                )
            )

    for index in range(n):
        kind = rng.choices(names, weights=weights)[0]
        kinds[kind] = kinds.get(kind, 0) + 1
        at = rng.uniform(0.0, window)
        intent_id = f"ci-{seed}-{index:05d}"
        copies = rng.choices((1, 2, 3), weights=(0.5, 0.3, 0.2))[0]
        if kind == "malformed":
            account = rng.choice(tradable)
            for copy in range(rng.choice((1, 1, 2))):
                messages.append(
                    Message(
                        kind=kind,
                        data=_malformed(rng, account.tenant_id, account.account_id, index),
                        at=at + copy * rng.uniform(0.0, 2.0),
                        topic=rng.choice(TOPICS),
                    )
                )
            continue
        account = rng.choice(halted_accounts if kind == "halted" else tradable)
        limit = account.max_order_notional_usd
        if kind == "risk_rejected":
            ceiling = min(limit * 1.15, account.max_inflight_usd or limit * 1.15)
            amount = rng.uniform(limit + 1, ceiling)
        else:
            amount = rng.uniform(0.15, 0.6) * limit
        payload: dict[str, Any] = {
            "tenant_id": account.tenant_id,
            "broker_account_id": account.account_id,
            "client_intent_id": intent_id,
            **_order_fields(rng, amount, account.symbols),
            "strategy_id": f"chaos-{kind}",
        }
        if kind == "dry_run":
            payload["dry_run"] = True
        if kind == "stale":
            born = stale_born - timedelta(seconds=rng.uniform(0, 3600))
            payload["created_at"] = born.isoformat().replace("+00:00", "Z")
        publish_copies(kind, payload, at, copies)
        if kind == "conflict":
            # The same client_intent_id with another payload, racing the original: one of
            # the two executes, the other is refused for good and dead-lettered.
            other = {**payload, "qty": payload["qty"] + 1}
            if other["order_type"] == "limit":
                amount = payload["limit_price"] * payload["qty"]
                other["limit_price"] = round(amount / other["qty"], 2)
            publish_copies(kind, other, at + rng.uniform(0.0, 0.3), 1)

    for burst in range(1 + n // 200):
        # Several intents at once on each limited account, each to both servers: a limit that
        # counted only placed orders (not those in flight) lets them all through, past the limit
        # at the broker. The rig gives their orders a slow broker of their own instead of the
        # queued faults (an order whose answer is lost is the known gap's, which the monitor
        # excuses): they test the limits alone, in flight together.
        at = rng.uniform(0.0, 0.8 * window)
        for account in (a for a in tradable if a.counted_limits):
            symbol = rng.choice(account.symbols)
            for index in range(BURST_SIZE):
                payload = {
                    "tenant_id": account.tenant_id,
                    "broker_account_id": account.account_id,
                    "client_intent_id": f"ci-{seed}-burst-{burst}-{account.account_id}-{index}",
                    "symbol": symbol,
                    "side": "buy",
                    "qty": 3,
                    "order_type": "limit",
                    "limit_price": round(rng.uniform(5.0, 20.0), 2),
                    "strategy_id": "chaos-limit-burst",
                }
                kinds["limit_burst"] = kinds.get("limit_burst", 0) + 1
                messages.append(
                    Message(
                        kind="limit_burst",
                        data=json.dumps(payload).encode(),
                        at=at + rng.uniform(0.0, 0.05),
                        topic=burst_topic(index),
                        intent_id=payload["client_intent_id"],
                        payload_hash=payload_hash(payload),
                        account=account.key,
                    )
                )

    menu = _fault_menu(timing)
    fault_count = max(len(menu), round(n * 0.35))
    picks = list(menu) + rng.choices(menu, weights=[m[2] for m in menu], k=fault_count - len(menu))
    broker_faults = sorted(
        (
            BrokerFault(at=rng.uniform(0.0, window), method=method, label=label, fault=make(rng))
            for label, method, _weight, make in picks
        ),
        key=lambda f: f.at,
    )

    storms = _storms(rng, seed, storm_count, storm_account, window)
    # Outages and kills keep clear of storms where the window has room (they may still meet).
    busy: list[tuple[float, float]] = [(s.at, s.at + STORM_SPAN) for s in storms]

    def victim(label: str, number: int, at: float, topic: str) -> Message:
        account = rng.choice([a for a in tradable if a.max_inflight_usd is not None])
        payload = {
            "tenant_id": account.tenant_id,
            "broker_account_id": account.account_id,
            "client_intent_id": f"ci-{seed}-{label}-{number}",
            **_order_fields(
                rng, rng.uniform(0.1, 0.3) * account.max_order_notional_usd, account.symbols
            ),
            "strategy_id": f"chaos-{label}",
        }
        kinds[label] = kinds.get(label, 0) + 1
        return Message(
            kind=label,
            data=json.dumps(payload).encode(),
            at=at,
            topic=topic,
            intent_id=payload["client_intent_id"],
            payload_hash=payload_hash(payload),
            account=account.key,
        )

    # An outage lasts its duration plus the time a client takes to reconnect; a kill, the
    # time to stage its hanging calls and restart the servers.
    durations = [rng.uniform(6.0, 8.0) for _ in range(1 + n // 200)]
    outage_times = _free_times(rng, len(durations), 0.15 * window, 0.75 * window, busy, 11.0, 1.0)
    outages = [
        Outage(
            at=t,
            duration=durations[i],
            victims=tuple(
                victim("outage_victim", 2 * i + j, t, rng.choice(TOPICS)) for j in range(2)
            ),
        )
        for i, t in enumerate(outage_times)
    ]
    kill_times = _free_times(rng, 1 + n // 120, 0.05 * window, 0.9 * window, busy, 5.0, 1.0)
    kills = []
    for i, t in enumerate(kill_times):
        servers = (1, 2) if i == 0 else rng.choice(((1,), (2,), (1, 2)))
        kills.append(
            Kill(
                at=t,
                servers=servers,
                victims=tuple(
                    victim("kill_victim", 2 * i + j, t, TOPIC_S1 if server == 1 else TOPIC_S2)
                    for j, server in enumerate(servers)
                ),
            )
        )
    jumps = [
        ClockJump(at=t, seconds=timing.ttl * rng.uniform(1.2, 3.0))
        for t in _free_times(rng, 1 + n // 120, 0.05 * window, window, busy, 0.5, 1.5)
    ]

    zombie_payload = {
        "tenant_id": zombie_account.tenant_id,
        "broker_account_id": zombie_account.account_id,
        "client_intent_id": f"ci-{seed}-zombie",
        "symbol": "AAPL",
        "side": "buy",
        "qty": 2,
        "order_type": "limit",
        "limit_price": 150.0,
        "strategy_id": "chaos-zombie",
    }
    zombie = Zombie(
        account=zombie_account,
        payload=zombie_payload,
        second_hang=timing.broker_timeout * 0.9,
    )
    return Plan(
        seed=seed,
        n=n,
        timing=timing,
        window=window,
        accounts=accounts,
        halted_tenants=halted,
        messages=tuple(sorted(messages, key=lambda m: m.at)),
        broker_faults=tuple(broker_faults),
        outages=tuple(outages),
        kills=tuple(kills),
        jumps=tuple(jumps),
        zombie=zombie,
        storms=storms,
        kinds=kinds,
    )


def _storms(
    rng: random.Random,
    seed: int,
    count: int,
    account: Account,
    window: float,
) -> tuple[ZombieStorm, ...]:
    """`count` storms, every pause point and transition played before any repeats."""
    # One slot each, in order: other faults may land inside a storm, but storms never overlap.
    slot = (window - 2.0) / count
    times = [index * slot + rng.uniform(0.0, slot - STORM_SPAN) for index in range(count)]
    first = rng.randrange(len(PAUSE_POINTS))  # which points a short run plays: the seed's
    points = [PAUSE_POINTS[(first + i) % len(PAUSE_POINTS)] for i in range(count)]
    start = rng.randrange(len(TRANSITIONS))
    transitions = [TRANSITIONS[(start + i) % len(TRANSITIONS)] for i in range(count)]
    rng.shuffle(transitions)
    storms = []
    for index, at in enumerate(times):
        payload = {
            "tenant_id": account.tenant_id,
            "broker_account_id": account.account_id,
            "client_intent_id": f"ci-{seed}-storm-{index}",
            "symbol": account.symbols[0],
            # Alternate sides keep the position near zero, so no storm is refused by its limit.
            "side": ("buy", "sell")[index % 2],
            "qty": 1,
            "order_type": "limit",
            "limit_price": 1.0,
            "strategy_id": "chaos-storm",
        }
        storms.append(
            ZombieStorm(
                at=at,
                point=points[index],
                transition=transitions[index],
                server=rng.choice((1, 2)),
                account=account,
                payload=payload,
            )
        )
    return tuple(storms)
