"""What must hold whatever failed: checked continuously during the storm and once after it.

Continuously, a `Monitor` thread reads, at one Firestore `read_time` (a consistent snapshot of the
whole database: no reading can pair a document before a commit with another after it), every
`reserved` reservation and every budgeted account's in-flight document, and records any snapshot
in which an account holds more unexpired reserved USD than its `max_inflight_usd` (by the
reservations themselves, and by the in-flight document the budget is enforced on), or in which
the two disagree: an unexpired lease counted for an intent whose reservation no longer holds it
(a leaked lease blocks the account's budget until it expires: TTL, ten minutes by default), or a
live counted reservation whose lease is missing (the budget could be over-committed). "Unexpired"
is the contract's own definition: a lease past `expires_at`, or expired by a sweep, stops counting.
A clock jump therefore lets new leases in while the old invocations still run; that exposure is
inherent to leases with a TTL and is not counted as a breach.

A snapshot is judged only where it shows a whole database: the rig's outages restart the
emulator with an import that stamps its batches at different times, so a `read_time` inside the
import (or before it, or across a restart) shows documents the product never held together
(`store_lives`; seed 632106 saw a lease "counted" without its reservation that way). Such
snapshots are counted as `unjudged`, neither passed nor failed.

The same instant is held against the broker's order book (the truth): for every account with
`max_daily_orders` or `max_position_qty`, the orders the broker had accepted by the snapshot's
instant, that UTC day, and their net quantity per symbol, must fit the limits. An order counts
unless the records at that instant did not count it for one of these reasons (`EXCUSES`), each a
window the design leaves to a later layer, which the final checks then hold to account:
- `outlived`: its intent was recorded `stale`/`halted`/`rejected`/`dry_run` (or held by a stale
  take-over's lease, which counts nowhere): an attempt that outlived its lease placed it after a
  newer attempt ended the intent. No check before a broker call can stop a paused process; the
  fenced release or the reconciler settles it (the record then names it, counted from there on,
  and it is cancelled: "no order ... unless it was cancelled and the record says so").
- `clock_jump`: a chaos clock jump expired its intent's lease while the invocation still ran (a
  sweep reading a clock a TTL ahead): to the records that lease had lapsed, so it stopped counting,
  exactly as a lapsed lease must, while the invocation went on to place its order. A real clock
  cannot jump for one process only; this is the rig's way to outlive a lease, not a product gap.
  Only where the record keeps no hold (`counted_lease_id` null): a hold is written in the same
  batch as the record that names it, and counts against orders per day and position past its
  lease until the order's fate is known, so an order whose record names a hold is counted
  whatever the clock did. What is left is a newer attempt that ended the hold knowing of no
  order (an exception before its broker call) while the jumped-out attempt still placed one.
- `unknown_fate`: its attempt lost the broker's answer (released `exception`), or died or was
  paused before recording it (its lease lapsed, or the sweeper expired it): the known gap of
  `UNKNOWN_ORDERS_UNCOUNTED_ALLOWED`, closed (False): such an order's hold keeps counting it.
An order once excused stays excused for the rest of the run (intents admitted while it was not
counted may be placed after its record counts it again), and so does an order its record learned
of only by a repair (a sample may fall between its acceptance and its repair only by luck). The
samples are judged after the run (`over_limits`), with that knowledge; a breach needs the whole
book past the limit too (an excused buy left out of a short position is no breach).

After draining and one sweep, `final_checks` compares the reservations, the dead letters, the
broker sandbox's order book (the ground truth for orders) and the functions' own structured logs:
every lease an invocation acquired must have been ended by that same invocation (released,
refused by the fence, or failed because the store was down, which the sweeper then covers),
unless its process was SIGKILLed. That is the `finally` guarantee, checked directly rather than
through its slower symptoms (an account blocked for one TTL).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from devtools.alpaca_sandbox import AlpacaSandbox
from execution.client_order_ids import parse_plain
from execution.clock import system_clock
from execution.models import TERMINAL_OUTCOMES
from tests.chaos.store_lives import StoreLives
from tests.chaos.workload import Account, Plan

_EPSILON = 1e-6
NO_ORDER_OUTCOMES = frozenset({"halted", "rejected", "stale", "dry_run"})
CLOSED_STATUSES = frozenset({"canceled", "expired", "rejected"})


def closed_unfilled_as_recorded(doc: dict[str, Any], order: dict[str, Any]) -> bool:
    """The record says `rejected` with the broker's own order, which the broker closed with
    nothing filled: the record agrees with the broker (the reconciler's `closed_unfilled` or
    `fate_settled` verdict, or a 200 answering an order already closed)."""
    return (
        doc.get("outcome") == "rejected"
        and doc.get("broker_order_id") == order["id"]
        and order["status"] in CLOSED_STATUSES
        and float(order.get("filled_qty") or 0) == 0
    )


TERMINAL = frozenset(o.value for o in TERMINAL_OUTCOMES)

UNKNOWN_ORDERS_UNCOUNTED_ALLOWED = False
"""The known gap (tests/simulation/invariants.py has the same switch): an order whose attempt
lost the broker's answer (released `exception`) or whose invocation died or was paused before
recording it (lease lapsed or expired by the sweeper) stops counting against the account's limits
until a redelivery or the reconciler records it `placed`; an intent admitted meanwhile can take the
account past `max_daily_orders` or `max_position_qty` at the broker. While True such orders are
left out of the broker-side count (and listed as excused in the report). False since the holds of
`execution.account_state` keep counting an order of unknown fate until its fate is known."""
EXCUSES = ("outlived", "clock_jump", "unknown_fate")


@dataclass
class Violation:
    """One observation that breaks an invariant."""

    kind: str
    key: str
    detail: str
    seen: int = 1


Finding = tuple[str, str, str]
"""(kind, key, detail) of one breach seen in one snapshot."""


def live_counted(
    reserved: Iterable[dict[str, Any]], at: datetime
) -> dict[tuple[str, str], dict[str, dict[str, Any]]]:
    """Per account, the reservations whose lease counts against its budget at `at` (reserved,
    admitted, unexpired), by intent id. `reserved`: documents with `status == "reserved"`."""
    live: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for doc in reserved:
        if doc.get("counts_against_budget") and doc["expires_at"] > at:
            key = (doc["tenant_id"], doc["broker_account_id"])
            live.setdefault(key, {})[doc["client_intent_id"]] = doc
    return live


def unexpired_leases(state: dict[str, Any], at: datetime) -> dict[str, dict[str, Any]]:
    """The entries of an account-state document that count against the budget at `at`."""
    return {
        lease_id: entry
        for lease_id, entry in (state.get("leases") or {}).items()
        if entry["expires_at"] > at
    }


def lease_findings(
    name: str,
    held: dict[str, dict[str, Any]],
    leases: dict[str, dict[str, Any]],
    kept_hold: Callable[[str, str], bool],
) -> list[Finding]:
    """The rule "in-flight leases match live reservations", for one account at one instant.

    `held`: its live counted reservations by intent (`live_counted`); `leases`: its unexpired
    entries (`unexpired_leases`); `kept_hold(intent, lease)`: whether the intent's record at that
    instant names the lease as its `counted_lease_id`. An unexpired entry is legal while its
    intent's live reservation holds that very lease, or while the record keeps it as its hold (a
    sweep, a jumped one included, or a release of unknown fate ended the lease and the hold keeps
    counting until the order's fate is known); otherwise it is leaked. A live counted reservation
    whose lease has no entry is uncounted. A take-over that was admitted replaces the earlier
    hold in the same commit; one that was not keeps naming it (`new_record`).
    """
    findings: list[Finding] = []
    for lease_id, entry in leases.items():
        intent_id = entry["client_intent_id"]
        doc = held.get(intent_id)
        if doc is not None and doc["lease_id"] == lease_id:
            continue
        if kept_hold(intent_id, lease_id):
            continue
        state = "no live reservation" if doc is None else f"lease {doc['lease_id']}"
        findings.append(
            (
                "leaked_lease",
                f"{name}:{lease_id}",
                f"{name}: lease {lease_id[:8]} of {intent_id} counted "
                f"({entry['amount_usd']:g} USD) but its reservation has {state}",
            )
        )
    counted = {e["client_intent_id"]: lid for lid, e in leases.items()}
    for intent_id, doc in held.items():
        if counted.get(intent_id) != doc["lease_id"]:
            findings.append(
                (
                    "uncounted",
                    f"{name}:{doc['lease_id']}",
                    f"{name}: live reservation {intent_id} (lease {doc['lease_id'][:8]}) is "
                    "missing from the in-flight document",
                )
            )
    return findings


@dataclass
class Observation:
    """What one snapshot showed: kept only where it shows a whole database (`StoreLives`)."""

    findings: list[Finding] = field(default_factory=list)
    peaks: dict[tuple[str, str], float] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    excused: list[tuple[str, str]] = field(default_factory=list)
    """(why, order id) of the orders this snapshot left out of its count."""


class Monitor(threading.Thread):
    """Polls a consistent snapshot of reservations and in-flight documents until stopped."""

    def __init__(
        self,
        db: firestore.Client,
        accounts: tuple[Account, ...],
        *,
        broker: AlpacaSandbox | None = None,
        jumped: set[str] | None = None,
        lives: StoreLives | None = None,
        interval: float = 0.15,
        lag: float = 0.3,
        read_timeout: float = 2.0,
    ) -> None:
        super().__init__(name="chaos-monitor", daemon=True)
        self._timeout = read_timeout
        self._db = db
        self._budgeted = [a for a in accounts if a.max_inflight_usd is not None]
        self._limited = [a for a in accounts if a.counted_limits]
        self._broker = broker
        self._jumped = jumped if jumped is not None else set()
        self._lives = lives or StoreLives()
        self.book_samples: list[Sample] = []
        """Per limited account and snapshot instant: the broker's orders the records counted,
        and all of its orders."""
        self.excused: dict[str, set[str]] = {why: set() for why in EXCUSES}
        """Why an order was left out of a snapshot's count → the order ids, for the report."""
        self._interval = interval
        self._lag = lag
        self._halt = threading.Event()
        self.snapshots = 0
        self.failed_reads = 0
        self.unjudged = 0
        """Snapshots not judged: their `read_time` fell inside an emulator import (or before
        it), or a restart began while they were read (`StoreLives`)."""
        self.peak: dict[tuple[str, str], float] = {a.key: 0.0 for a in self._budgeted}
        self.violations: dict[tuple[str, str], Violation] = {}

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self.judge(system_clock() - timedelta(seconds=self._lag))
            except Exception:  # the emulator is down or restarting
                self.failed_reads += 1
            self._halt.wait(self._interval)

    def judge(self, at: datetime) -> bool:
        """Read the database as it was at `at` and keep what it shows, if it shows a whole
        database (see `store_lives`); whether it was judged."""
        life = self._lives.life_for(at)
        if life is None:
            self.unjudged += 1
            return False
        seen = self.observe(at)
        if not self._lives.still(life):
            self.unjudged += 1
            return False
        self._keep(seen)
        return True

    def observe(self, at: datetime) -> Observation:
        """What the database showed at `at`, not kept yet."""
        seen = Observation()
        self._observe_leases(at, seen)
        if self._broker is not None:
            self._observe_book(at, seen)
        return seen

    def _keep(self, seen: Observation) -> None:
        self.snapshots += 1
        for account_key, value in seen.peaks.items():
            self.peak[account_key] = max(self.peak[account_key], value)
        for kind, key, detail in seen.findings:
            self._record(kind, key, detail)
        self.book_samples += seen.samples
        for why, order_id in seen.excused:
            self.excused[why].add(order_id)

    def _observe_leases(self, at: datetime, seen: Observation) -> None:
        reserved = (
            snap.to_dict() or {}
            for snap in self._db.collection_group("execution_reservations")
            .where(filter=FieldFilter("status", "==", "reserved"))
            .stream(retry=None, timeout=self._timeout, read_time=at)
        )
        live = live_counted(list(reserved), at)
        refs = [
            self._db.collection("tenants", a.tenant_id, "execution_inflight").document(a.account_id)
            for a in self._budgeted
        ]
        inflight = {
            snap.reference.path: snap.to_dict() or {}
            for snap in self._db.get_all(refs, retry=None, timeout=self._timeout, read_time=at)
        }
        for account, ref in zip(self._budgeted, refs, strict=True):
            budget = float(account.max_inflight_usd or 0.0)
            held = live.get(account.key, {})
            leases = unexpired_leases(inflight.get(ref.path, {}), at)
            by_reservations = sum(float(d["amount_usd"]) for d in held.values())
            by_document = sum(float(e["amount_usd"]) for e in leases.values())
            name = "/".join(account.key)
            seen.peaks[account.key] = max(by_reservations, by_document)
            if by_reservations > budget + _EPSILON:
                seen.findings.append(
                    (
                        "over_budget",
                        name,
                        f"{name}: {by_reservations:g} USD reserved > {budget:g} at "
                        f"{at:%H:%M:%S.%f}",
                    )
                )
            if by_document > budget + _EPSILON:
                seen.findings.append(
                    (
                        "over_budget",
                        f"{name}:doc",
                        f"{name}: in-flight document holds {by_document:g} USD > {budget:g}",
                    )
                )

            def kept_hold(intent_id: str, lease_id: str, account: Account = account) -> bool:
                return self._kept_hold(account, intent_id, lease_id, at)

            seen.findings += lease_findings(name, held, leases, kept_hold)

    def _kept_hold(self, account: Account, intent_id: str, lease_id: str, at: datetime) -> bool:
        """Whether the intent's record, as of `at`, keeps this lease's hold (`counted_lease_id`).

        A lease the sweeper expired, or whose order's fate its release did not know, keeps
        counting until that fate is known (`execution.account_state`). A jumped sweep expires
        live leases, so such a hold can still be unexpired here; a real sweep only lapsed ones.
        """
        ref = self._db.collection("tenants", account.tenant_id, "execution_reservations").document(
            intent_id
        )
        doc = ref.get(retry=None, timeout=self._timeout, read_time=at).to_dict() or {}
        return bool(doc.get("counted_lease_id") == lease_id)

    def _observe_book(self, at: datetime, seen: Observation) -> None:
        """Sample the broker's order book as of `at` for each limited account: the orders the
        records counted then (see the module docstring); judged after the run (`over_limits`)."""
        assert self._broker is not None
        book = [o for o in list(self._broker.orders.values()) if _submitted(o) <= at]
        for account in self._limited:
            records = {
                snap.id: snap.to_dict() or {}
                for snap in self._db.collection(
                    "tenants", account.tenant_id, "execution_reservations"
                )
                .where(filter=FieldFilter("broker_account_id", "==", account.account_id))
                .stream(retry=None, timeout=self._timeout, read_time=at)
            }
            counted, held = [], []
            for order in book:
                ids = parse_plain(order["client_order_id"])
                if ids is None or (ids[0], ids[1]) != account.key:
                    continue
                held.append(order)
                why = self._excused_as(order["id"])
                why = why or _excuse(records.get(ids[2]), order, at, ids[2] in self._jumped)
                if why is None:
                    counted.append(order)
                else:
                    # Once excused, for good: the records that count it later (a redelivery's
                    # `placed`, a repair) came too late for the intents admitted meanwhile.
                    seen.excused.append((why, order["id"]))
            seen.samples.append((account, at, counted, held))

    def _excused_as(self, order_id: str) -> str | None:
        return next((why for why, ids in self.excused.items() if order_id in ids), None)

    def _record(self, kind: str, key: str, detail: str) -> None:
        existing = self.violations.get((kind, key))
        if existing is None:
            self.violations[(kind, key)] = Violation(kind, key, detail)
        else:
            existing.seen += 1

    def of_kind(self, *kinds: str) -> list[Violation]:
        return [v for v in self.violations.values() if v.kind in kinds]


def _holdings(orders: list[dict[str, Any]], at: datetime) -> dict[tuple[str, str], Decimal]:
    """(limit, what) → how much `orders` hold of it at `at`: orders that UTC day, and the net
    quantity per symbol (its size: a limit holds both ways). Exact decimals, as the service
    decides them (`execution.positions`): no tolerance hides a billionth past a limit."""
    position: dict[str, Decimal] = {}
    for order in orders:
        qty = Decimal(str(order["qty"]))  # the broker's decimal text, or a float's shortest
        signed = qty if order["side"] == "buy" else -qty
        position[order["symbol"]] = position.get(order["symbol"], Decimal(0)) + signed
    today = sum(1 for o in orders if _submitted(o).date() == at.date())
    held = {("max_daily_orders", "orders today"): Decimal(today)}
    held.update({("max_position_qty", s): abs(q) for s, q in position.items()})
    return held


def over_limits(
    monitor: Monitor, late: set[str]
) -> tuple[list[str], dict[tuple[str, str, str], Decimal]]:
    """Every sampled instant at which the broker held more than an account's limits allow, and
    each limit's peak. `late`: orders whose record learned of them by a repair (placed by an
    outlived attempt, or found by the reconciler), excused like `outlived` for the whole run:
    the monitor may sample between such an order's acceptance and its repair only by luck.

    A breach is the broker's whole book past the limit (the truth) and the counted orders past
    it too: leaving an excused order out can only lower a count of orders, but it can push a
    net position further (an excused buy left out of a short position), which is no breach."""
    breaches: dict[str, tuple[str, int]] = {}
    peaks: dict[tuple[str, str, str], Decimal] = {}
    for account, at, orders, book in monitor.book_samples:
        counted = [o for o in orders if o["id"] not in late]
        truth = _holdings(book, at)
        for (limit, what), count in _holdings(counted, at).items():
            value = account.counted_limits.get(limit)
            if value is None:
                continue
            key = (*account.key, limit)
            count = min(count, truth.get((limit, what), Decimal(0)))
            peaks[key] = max(peaks.get(key, Decimal(0)), count)
            if count > Decimal(str(value)):
                name = f"{'/'.join(account.key)}: {what}"
                first, seen = breaches.get(name, ("", 0))
                detail = first or (
                    f"{name}: the broker holds {count:g} > {limit}={value:g} at {at:%H:%M:%S.%f} "
                    f"(orders counted: {', '.join(o['client_order_id'] for o in counted)})"
                )
                breaches[name] = (detail, seen + 1)
    return [f"{detail} (seen in {seen} snapshots)" for detail, seen in breaches.values()], peaks


Sample = tuple[Account, datetime, list[dict[str, Any]], list[dict[str, Any]]]


def _submitted(order: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(order["submitted_at"]).replace("Z", "+00:00"))


def _excuse(
    doc: dict[str, Any] | None, order: dict[str, Any], at: datetime, jumped: bool
) -> str | None:
    """Why the records did not count `order` at `at` (see the module docstring), or None."""
    if doc is None:
        return None  # no record at all: counted, and the final checks report it
    if doc.get("outcome") == "placed":
        return None  # counted, under whatever order it names (the final checks compare)
    live = doc.get("status") == "reserved" and doc["expires_at"] > at
    if live and doc.get("counts_against_budget"):
        return None  # its lease counts it as if placed
    if live or doc.get("outcome") in NO_ORDER_OUTCOMES:
        return "outlived"
    if doc.get("counted_lease_id"):
        return None  # its hold counts it past its lease, whatever the clock did
    if jumped:
        return "clock_jump"
    return "unknown_fate" if UNKNOWN_ORDERS_UNCOUNTED_ALLOWED else None


Lives = list[tuple[str, list[dict[str, Any]], datetime | None]]
"""Per function process life: its server's name, its log records, when it was killed (or None)."""


@dataclass
class LeaseAudit:
    """Every lease an invocation acquired, matched with how that same invocation ended it."""

    acquired: int = 0
    released: int = 0
    fenced: int = 0
    release_failed: int = 0
    killed: int = 0
    took_over: int = 0
    unended: list[str] = field(default_factory=list)


def audit_leases(lives: Lives, release_grace: timedelta = timedelta(seconds=12)) -> LeaseAudit:
    """Match `exec.reservation.acquired` with the end of the lease in the same process life.

    A lease ends as `released`, `release_fenced` (a newer attempt holds the document) or
    `release_failed` (the store was unreachable: the sweeper's case). Only SIGKILL may leave a
    lease without an end, and only if it struck while the invocation ran: an invocation that was
    acked, or that finished (`exec.intent.completed` / `exec.intent.exception`) more than
    `release_grace` (the longest a release may retry) before the kill, had to end its lease first.

    `release_grace` is a measured heuristic, not a bound the design proves, and cannot be proved
    tighter: both events are logged before the `finally` releases, and the design lets a release
    wait its account's turn (up to 60 s, `account_turns`) and then retry RESERVATION_MAX_ATTEMPTS
    (12) commits of up to FIRESTORE_TIMEOUT_SECONDS each, with pauses of up to 1 s between them.
    12 s is already below that bound: a kill later than 12 s after a release that was still
    retrying would be reported as unended (a false alarm to investigate, never a missed leak).
    """
    audit = LeaseAudit()
    for server, records, killed_at in lives:
        acquired: dict[str, dict[str, Any]] = {}
        ended: dict[str, str] = {}
        finished: dict[tuple[str, int], datetime] = {}
        answered: set[tuple[str, int]] = set()
        for record in records:
            event = record.get("event")
            lease = record.get("lease_id")
            if event == "exec.reservation.acquired":
                acquired[lease] = record
                audit.took_over += bool(record.get("took_over"))
            elif event == "exec.reservation.released":
                ended.setdefault(lease, "released")
            elif event == "exec.reservation.release_fenced":
                ended.setdefault(lease, "fenced")
            elif event == "exec.reservation.release_failed" and lease:
                ended.setdefault(lease, "failed")
            elif event in {"exec.intent.completed", "exec.intent.exception"}:
                key = (str(record.get("client_intent_id")), int(record.get("attempt") or 0))
                finished.setdefault(key, datetime.fromisoformat(record["time"]))
            elif event == "exec.delivery.acked":
                answered.add((str(record.get("client_intent_id")), int(record.get("attempt") or 0)))
        audit.acquired += len(acquired)
        for lease, record in acquired.items():
            how = ended.get(lease)
            key = (str(record.get("client_intent_id")), int(record["attempt"]))
            done = finished.get(key)
            # Acked means the invocation got past its `finally`: a later kill excuses nothing.
            in_flight = killed_at is not None and (
                key not in answered and (done is None or done + release_grace > killed_at)
            )
            if how == "released":
                audit.released += 1
            elif how == "fenced":
                audit.fenced += 1
            elif how == "failed":
                audit.release_failed += 1
            elif in_flight:
                audit.killed += 1
            else:
                when = "" if done is None else f", finished at {done:%H:%M:%S.%f}"
                audit.unended.append(
                    f"{server}: lease {lease[:8]} of {record.get('client_intent_id')} "
                    f"(attempt {record.get('attempt')}{when}) was never released by its invocation"
                )
    return audit


def zombie_staged(lives: Lives, intent_id: str) -> str | None:
    """Why the staged take-over did not happen as designed, or None if it did.

    Designed: the first attempt's lease is taken over (attempt 2) while the first attempt is
    still running, and the take-over still holds it when the first attempt comes back to release
    (whatever that release then does): the one interleaving the `lease_id` fence decides.
    """
    acquired: dict[int, dict[str, Any]] = {}
    ends: dict[str, str] = {}
    for _server, records, _killed in lives:
        for record in records:
            if record.get("client_intent_id") != intent_id:
                continue
            event = record.get("event")
            if event == "exec.reservation.acquired":
                acquired[int(record.get("attempt", 0))] = record
            elif event in {
                "exec.reservation.released",
                "exec.reservation.release_fenced",
                "exec.reservation.release_failed",
            }:
                ends.setdefault(record["lease_id"], record["time"])
    first, second = acquired.get(1), acquired.get(2)
    if first is None or second is None:
        return f"attempts acquired: {sorted(acquired)}"
    first_end = ends.get(first["lease_id"])
    if first_end is None:
        return "the first attempt never ended its lease (it found the take-over already released)"
    if not second["time"] < first_end:
        return f"the take-over ({second['time']}) came after the first release ({first_end})"
    second_end = ends.get(second["lease_id"])
    if second_end is not None and second_end < first_end:
        return f"the take-over released ({second_end}) before the first attempt ({first_end})"
    return None


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    failures: list[str] = field(default_factory=list)


@dataclass
class Evidence:
    """Everything read after the run."""

    plan: Plan
    published: list[Any]
    reservations: dict[str, dict[str, Any]]
    dead_letters: dict[str, dict[str, Any]]
    reserved_after_sweep: list[str]
    inflight: dict[tuple[str, str], dict[str, Any]]
    orders: dict[str, dict[str, Any]]
    posted: list[str]
    monitor: Monitor
    audit: LeaseAudit
    checked_at: datetime
    reconcile: dict[str, Any] = field(default_factory=dict)
    storms: list[Any] = field(default_factory=list)


def message_resolved(
    published: Any, reservations: dict[str, dict[str, Any]], dead_letters: dict[str, Any]
) -> bool:
    """A message ends as a terminal record of its own payload, or as a dead letter."""
    if published.message_id in dead_letters:
        return True
    message = published.message
    if message.intent_id is None:
        return False
    doc = reservations.get(message.intent_id)
    return bool(
        doc
        and doc.get("status") == "released"
        and doc.get("outcome") in TERMINAL
        and doc.get("payload_hash") == message.payload_hash
    )


def final_checks(ev: Evidence) -> list[Check]:
    """The invariants of the issue, plus the two the lease protocol implies."""
    checks: list[Check] = []
    intents = {p.message.intent_id for p in ev.published if p.message.intent_id}

    checks.append(
        Check(
            "zero `reserved` documents after drain + sweep",
            not ev.reserved_after_sweep,
            f"{len(ev.reserved_after_sweep)} reserved",
            [f"still reserved: {path}" for path in ev.reserved_after_sweep],
        )
    )

    failures = []
    unknown = [coid for coid in ev.orders if coid not in intents]
    failures += [f"order {coid} belongs to no intent (a new client_order_id?)" for coid in unknown]
    placed = closed = 0
    for intent_id in sorted(intents):
        doc = ev.reservations.get(intent_id) or {}
        order = ev.orders.get(intent_id)
        if order is not None and closed_unfilled_as_recorded(doc, order):
            closed += 1
        elif doc.get("outcome") == "placed":
            placed += 1
            if order is None:
                failures.append(f"{intent_id}: recorded placed but the broker has no order")
            elif doc.get("broker_order_id") != order["id"]:
                failures.append(
                    f"{intent_id}: recorded order {doc.get('broker_order_id')} but the broker's is "
                    f"{order['id']}"
                )
        elif order is not None:
            failures.append(
                f"{intent_id}: the broker has order {order['id']} but the record says "
                f"{doc.get('status')}/{doc.get('outcome')}"
            )
    reached = len({c for c in ev.posted if c in intents})
    checks.append(
        Check(
            "every broker order recorded with its order id: placed, or rejected closed unfilled",
            not failures,
            f"{len(ev.orders)} orders for {reached} intents posted; {placed} recorded placed, "
            f"{closed} rejected with their order closed unfilled; "
            f"{sum(Counter(ev.posted).values()) - len(set(ev.posted))} re-posts deduped",
            failures,
        )
    )

    checks.append(_forbidden_orders_cancelled(ev, intents))
    checks.append(_within_limits_at_the_broker(ev))
    checks.append(_reconciler_agrees(ev))
    checks.append(_storms_happened(ev))

    over = ev.monitor.of_kind("over_budget")
    peaks = ", ".join(
        f"{'/'.join(k)} {v:g}/{ev.plan.account(k).max_inflight_usd:g}"
        for k, v in sorted(ev.monitor.peak.items())
    )
    checks.append(
        Check(
            "no account over its in-flight budget (continuous)",
            not over,
            f"{ev.monitor.snapshots} snapshots ({ev.monitor.failed_reads} unreadable, "
            f"{ev.monitor.unjudged} not judged: the emulator restarting or importing); "
            f"peak {peaks}",
            [f"{v.detail} (seen in {v.seen} snapshots)" for v in over],
        )
    )

    failures = []
    resolved = 0
    for published in ev.published:
        if message_resolved(published, ev.reservations, ev.dead_letters):
            resolved += 1
            continue
        message = published.message
        doc = ev.reservations.get(message.intent_id or "") or {}
        failures.append(
            f"message {published.message_id} ({message.kind}, {message.intent_id}): "
            f"record {doc.get('status')}/{doc.get('outcome')} attempt {doc.get('attempt')}, "
            "no dead letter"
        )
    checks.append(
        Check(
            "every message ends terminal or dead-lettered",
            not failures,
            f"{resolved}/{len(ev.published)} messages; {len(ev.dead_letters)} dead letters",
            failures,
        )
    )

    failures = [
        f"{v.detail} (seen in {v.seen} snapshots)"
        for v in ev.monitor.of_kind("leaked_lease", "uncounted")
    ]
    left = 0
    for key, doc in ev.inflight.items():
        for lease_id, entry in (doc.get("leases") or {}).items():
            if entry["expires_at"] > ev.checked_at:
                left += 1
                failures.append(
                    f"{'/'.join(key)}: lease {lease_id[:8]} of {entry['client_intent_id']} still "
                    "counted after the drain"
                )
    checks.append(
        Check(
            "in-flight leases match live reservations (continuous)",
            not failures,
            f"{left} unexpired leases left",
            failures,
        )
    )

    audit = ev.audit
    checks.append(
        Check(
            "every lease ended by its own invocation (unless killed)",
            not audit.unended,
            f"{audit.acquired} acquired ({audit.took_over} take-overs): {audit.released} released, "
            f"{audit.fenced} fenced, {audit.release_failed} store down, {audit.killed} killed",
            audit.unended,
        )
    )
    return checks


def _forbidden_orders_cancelled(ev: Evidence, intents: set[str | None]) -> Check:
    """No order for an intent recorded stale/halted/rejected/dry_run unless it was cancelled and
    the record says so (a `repair` naming the earlier outcome and the cancel), or the broker
    closed it unfilled and the record says `rejected` with it."""
    failures = []
    repaired = 0
    for intent_id in sorted(i for i in intents if i in ev.orders):
        doc = ev.reservations.get(intent_id) or {}
        order = ev.orders[intent_id]
        repair = doc.get("repair") or {}
        if closed_unfilled_as_recorded(doc, order):
            continue  # an order that can never trade, recorded as the broker says
        if doc.get("outcome") in NO_ORDER_OUTCOMES:
            reason = (doc.get("error") or "")[:90]
            failures.append(
                f"{intent_id}: recorded {doc['outcome']} ({reason}) but the broker holds order "
                f"{order['id']} ({order['status']})"
            )
        elif repair.get("previous_outcome") in NO_ORDER_OUTCOMES:
            repaired += 1
            if order["status"] != "canceled" or repair.get("cancel") != "requested":
                failures.append(
                    f"{intent_id}: recorded {repair['previous_outcome']} then repaired to its "
                    f"order {order['id']}, which is {order['status']} (cancel: "
                    f"{repair.get('cancel')})"
                )
    no_order = sum(
        1 for i in intents if (ev.reservations.get(i) or {}).get("outcome") in NO_ORDER_OUTCOMES
    )
    return Check(
        "no order for stale / halted / rejected / dry_run unless cancelled and recorded so",
        not failures,
        f"{no_order} such intents; {repaired} late orders cancelled and repaired",
        failures,
    )


def _within_limits_at_the_broker(ev: Evidence) -> Check:
    late = {
        str(doc.get("broker_order_id")) for doc in ev.reservations.values() if doc.get("repair")
    }
    over, peak = over_limits(ev.monitor, late)
    peaks = ", ".join(
        f"{tenant}/{account} {limit} {value:g}/"
        f"{ev.plan.account((tenant, account)).counted_limits[limit]:g}"
        for (tenant, account, limit), value in sorted(peak.items())
    )
    excused = ", ".join(f"{why} {len(ids)}" for why, ids in ev.monitor.excused.items())
    return Check(
        "no account past max_daily_orders / max_position_qty at the broker (continuous)",
        not over,
        f"{len(ev.monitor.book_samples)} samples; peak {peaks}; excused (uncounted when seen): "
        f"{excused}, repaired late {len(late)}"
        + ("" if UNKNOWN_ORDERS_UNCOUNTED_ALLOWED else " (unknown fates counted)"),
        over,
    )


def _reconciler_agrees(ev: Evidence) -> Check:
    """The scheduled reconciler, run once at the end, finds nothing it cannot settle."""
    report = ev.reconcile
    failures = [f"conflict: {c}" for c in report.get("conflicts") or []]
    failures += [f"missing at the broker: {m}" for m in report.get("missing_at_broker") or []]
    if report.get("pending"):
        # Everything has ended by now: no live lease may still hold an intent with an order.
        failures.append(f"{report['pending']} orders left pending (not settled onto a record)")
    if report.get("status") != 200 or not report.get("complete"):
        failures.append(f"the run did not complete: {report}")
    return Check(
        "the reconciler settles every broker order and finds every placed record's order",
        not failures,
        ", ".join(
            f"{k} {report.get(k)}" for k in ("listed", "ours", "agreed", "repaired", "pending")
        ),
        failures,
    )


def _storms_happened(ev: Evidence) -> Check:
    """The storms must have paused something, or they proved nothing."""
    reached = [s for s in ev.storms if s.reached]
    taken = [s for s in reached if s.taken_over]
    return Check(
        "zombie storms: first attempts paused past their lease and taken over",
        bool(taken) or not ev.storms,
        f"{len(reached)}/{len(ev.storms)} paused at their point, {len(taken)} taken over",
        [] if taken or not ev.storms else ["no storm was taken over while its zombie was paused"],
    )


def render(checks: list[Check], extra: list[tuple[str, str]]) -> str:
    """The invariants as a table, failures listed under it, then facts about the run."""
    width = max(len(c.name) for c in checks)
    lines = [f"{'invariant':<{width}}  result  detail", f"{'-' * width}  ------  ------"]
    for check in checks:
        lines.append(f"{check.name:<{width}}  {'PASS' if check.ok else 'FAIL':<6}  {check.detail}")
    for check in checks:
        if check.failures:
            lines.append(f"\nFAIL {check.name}:")
            lines += [f"  - {f}" for f in check.failures[:15]]
            if len(check.failures) > 15:
                lines.append(f"  ... and {len(check.failures) - 15} more")
    if extra:
        lines.append("")
        label = max(len(k) for k, _ in extra)
        lines += [f"{k:<{label}}  {v}" for k, v in extra]
    return "\n".join(lines)
