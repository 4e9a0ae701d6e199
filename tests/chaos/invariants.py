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
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from execution.clock import system_clock
from execution.models import TERMINAL_OUTCOMES
from tests.chaos.workload import Account, Plan

_EPSILON = 1e-6
NO_ORDER_OUTCOMES = frozenset({"halted", "rejected", "stale", "dry_run"})
TERMINAL = frozenset(o.value for o in TERMINAL_OUTCOMES)


@dataclass
class Violation:
    """One observation that breaks an invariant."""

    kind: str
    key: str
    detail: str
    seen: int = 1


class Monitor(threading.Thread):
    """Polls a consistent snapshot of reservations and in-flight documents until stopped."""

    def __init__(
        self,
        db: firestore.Client,
        accounts: tuple[Account, ...],
        *,
        interval: float = 0.15,
        lag: float = 0.3,
    ) -> None:
        super().__init__(name="chaos-monitor", daemon=True)
        self._db = db
        self._budgeted = [a for a in accounts if a.max_inflight_usd is not None]
        self._interval = interval
        self._lag = lag
        self._halt = threading.Event()
        self.snapshots = 0
        self.failed_reads = 0
        self.peak: dict[tuple[str, str], float] = {a.key: 0.0 for a in self._budgeted}
        self.violations: dict[tuple[str, str], Violation] = {}

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self.poll(system_clock() - timedelta(seconds=self._lag))
            except Exception:  # the emulator is restarting, or the snapshot predates its import
                self.failed_reads += 1
            self._halt.wait(self._interval)

    def poll(self, at: datetime) -> None:
        """Check the database as it was at `at`."""
        reserved = list(
            self._db.collection_group("execution_reservations")
            .where(filter=FieldFilter("status", "==", "reserved"))
            .stream(retry=None, timeout=2, read_time=at)
        )
        refs = [
            self._db.collection("tenants", a.tenant_id, "execution_inflight").document(a.account_id)
            for a in self._budgeted
        ]
        inflight = {
            snap.reference.path: snap.to_dict() or {}
            for snap in self._db.get_all(refs, retry=None, timeout=2, read_time=at)
        }
        self.snapshots += 1
        live: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        for snap in reserved:
            doc = snap.to_dict() or {}
            if doc.get("counts_against_budget") and doc["expires_at"] > at:
                key = (doc["tenant_id"], doc["broker_account_id"])
                live.setdefault(key, {})[doc["client_intent_id"]] = doc
        for account, ref in zip(self._budgeted, refs, strict=True):
            budget = float(account.max_inflight_usd or 0.0)
            held = live.get(account.key, {})
            by_reservations = sum(float(d["amount_usd"]) for d in held.values())
            leases = {
                lease_id: entry
                for lease_id, entry in (inflight.get(ref.path, {}).get("leases") or {}).items()
                if entry["expires_at"] > at
            }
            by_document = sum(float(e["amount_usd"]) for e in leases.values())
            name = "/".join(account.key)
            self.peak[account.key] = max(self.peak[account.key], by_reservations, by_document)
            if by_reservations > budget + _EPSILON:
                self._record(
                    "over_budget",
                    name,
                    f"{name}: {by_reservations:g} USD reserved > {budget:g} at {at:%H:%M:%S.%f}",
                )
            if by_document > budget + _EPSILON:
                self._record(
                    "over_budget",
                    f"{name}:doc",
                    f"{name}: in-flight document holds {by_document:g} USD > {budget:g}",
                )
            for lease_id, entry in leases.items():
                doc = held.get(entry["client_intent_id"])
                if doc is None or doc["lease_id"] != lease_id:
                    state = "no live reservation" if doc is None else f"lease {doc['lease_id']}"
                    self._record(
                        "leaked_lease",
                        f"{name}:{lease_id}",
                        f"{name}: lease {lease_id[:8]} of {entry['client_intent_id']} counted "
                        f"({entry['amount_usd']:g} USD) but its reservation has {state}",
                    )
            counted = {e["client_intent_id"]: lid for lid, e in leases.items()}
            for intent_id, doc in held.items():
                if counted.get(intent_id) != doc["lease_id"]:
                    self._record(
                        "uncounted",
                        f"{name}:{doc['lease_id']}",
                        f"{name}: live reservation {intent_id} (lease {doc['lease_id'][:8]}) is "
                        "missing from the in-flight document",
                    )

    def _record(self, kind: str, key: str, detail: str) -> None:
        existing = self.violations.get((kind, key))
        if existing is None:
            self.violations[(kind, key)] = Violation(kind, key, detail)
        else:
            existing.seen += 1

    def of_kind(self, *kinds: str) -> list[Violation]:
        return [v for v in self.violations.values() if v.kind in kinds]


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
    placed = 0
    for intent_id in sorted(intents):
        doc = ev.reservations.get(intent_id) or {}
        order = ev.orders.get(intent_id)
        if doc.get("outcome") == "placed":
            placed += 1
            if order is None:
                failures.append(f"{intent_id}: recorded placed but the broker has no order")
            elif doc.get("broker_order_id") != order["id"]:
                failures.append(
                    f"{intent_id}: recorded order {doc.get('broker_order_id')} but the broker's is "
                    f"{order['id']}"
                )
        elif order is not None and doc.get("outcome") not in NO_ORDER_OUTCOMES:
            failures.append(
                f"{intent_id}: the broker has order {order['id']} but the record says "
                f"{doc.get('status')}/{doc.get('outcome')}"
            )
    reached = len({c for c in ev.posted if c in intents})
    checks.append(
        Check(
            "exactly one broker order per intent that reached the broker",
            not failures,
            f"{len(ev.orders)} orders for {reached} intents posted; {placed} recorded placed; "
            f"{sum(Counter(ev.posted).values()) - len(set(ev.posted))} re-posts deduped",
            failures,
        )
    )

    failures = []
    for intent_id in sorted(intents):
        outcome = (ev.reservations.get(intent_id) or {}).get("outcome")
        if outcome in NO_ORDER_OUTCOMES and intent_id in ev.orders:
            reason = (ev.reservations[intent_id].get("error") or "")[:90]
            failures.append(
                f"{intent_id}: recorded {outcome} ({reason}) "
                f"but the broker holds order {ev.orders[intent_id]['id']}"
            )
    no_order = sum(
        1 for i in intents if (ev.reservations.get(i) or {}).get("outcome") in NO_ORDER_OUTCOMES
    )
    checks.append(
        Check(
            "no order for halted / rejected / stale / dry_run",
            not failures,
            f"{no_order} such intents",
            failures,
        )
    )

    over = ev.monitor.of_kind("over_budget")
    peaks = ", ".join(
        f"{'/'.join(k)} {v:g}/{ev.plan.account(k).max_inflight_usd:g}"
        for k, v in sorted(ev.monitor.peak.items())
    )
    checks.append(
        Check(
            "no account over its in-flight budget (continuous)",
            not over,
            f"{ev.monitor.snapshots} snapshots ({ev.monitor.failed_reads} unreadable); "
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
