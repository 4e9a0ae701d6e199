"""What must hold after every step of a schedule, and at its end (issues #11 and #14).

After every step:
- **one order per intent**: the broker holds at most one order placed for each intent;
- **a record names its own order**: a record `placed` names an order placed for that intent
  (never another tenant's order under a shared client order id);
- **limits**: an admission never takes an account's live, counted reservations over the in-flight
  budget in force while the invocation ran; and every order the broker accepts is placed under a
  live lease (its budget still held), unless its process was paused inside the broker call itself,
  after the last check could be made (the design's second layer then settles the record; see
  ARCHITECTURE "The broker is the truth"); and no order the broker accepts takes the account's
  orders on its UTC day (the broker's) past the limit in force, or grows the account's net
  position at the broker past it either way (long or short);
- **turns end**: no writer waits for its account's turn longer than the turns' timeout;
- **leases are bounded**: a lease runs at most its TTL from the commit that writes it (by the
  writer's clock: a carried acquire that lands after its waiter gave up holds a lease nobody
  uses, never a longer one), and a hold counts against the in-flight budget only while its
  lease holds its intent's reservation (once the lease ended, the hold may stay for the position
  and daily orders, its fate unknown, but gives the budget back);
- **no fenced write lands**: a reservation changes only by an acquire that may take it (absent,
  ended, or lapsed), by the holder of its lease (or, for it, a writer of its instance carrying its
  release in the account's line, even after it gave up waiting: seed 7678), by the sweeper
  expiring a lapsed lease, or by a repair to what the broker holds;
- **acked means recorded**: an acked message's intent is recorded with a terminal outcome, or dead-
  lettered, or a live lease still holds it, or the broker holds its order (the reconciler's
  window); an ack never contradicts an order the broker already held when the acking attempt took
  its lease;
- **no `reserved` document past its expiry plus one sweep**: a clean sweep leaves no lease it
  found lapsed;
- **an ended attempt leaves its order known** (`at_end`): an attempt whose order the broker
  accepted ends with the record naming it, or not final yet and not held by a newer lease, or
  marked (`unsettled_order`) while its message is unacked, unless a fault struck it after; and
  an ack leaves every order of its intent whose placing attempt ended named by a final record
  (`_check_ack_knows_orders`: the PENDING settle's window, closed by the marker).
A process's own decisions (a take-over, a budget, an expiry, a hold's end) are judged by its own
clock (`World.clock_of`: each process's clock may be off the world's); orders by the world's time.
At the end (every process killed, leases lapsed, one clean sweep and one clean reconcile):
no reservation is `reserved`, every broker order is recorded `placed` with its id (cancelled, or
the repair saying why not, where its record had forbidden it), no account state holds a count for
an order of unknown fate (the reconciler settled each), every acked message is recorded
terminal or dead-lettered, and no message is dead-lettered whose intent has an order at the
broker. The reconciler ends a hold only where the broker holds no order of its intent and no
attempt of it can still reach the broker. Gaps found by the simulation are exempt while they are
open (`FENCED_ACKS_ALLOWED`, `UNKNOWN_ORDERS_UNCOUNTED_ALLOWED`; both closed).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from execution.models import ExecutionResult, Outcome, money_decimal

if TYPE_CHECKING:
    from tests.simulation.scheduler import Actor
    from tests.simulation.world import Message, World

TERMINAL = frozenset({"placed", "rejected", "dry_run", "halted", "stale"})
CONTRADICTING = frozenset({Outcome.STALE, Outcome.HALTED, Outcome.REJECTED, Outcome.DRY_RUN})


FENCED_ACKS_ALLOWED = False
"""Closed: an attempt whose release was fenced used to ack its own outcome while a newer
attempt held the record (if that attempt then died, the acked intent ended `expired`, never
terminal; seed 149). The engine now retries such a delivery unless its order was settled.
Kept as a switch so that an invariant relaxed for a future gap has one place to be named."""


UNKNOWN_ORDERS_UNCOUNTED_ALLOWED = False
"""Closed (issue #12): an order whose placing attempt lost the broker's answer (released
`exception`) or died before recording it (its lease lapsed) used to stop counting against the
account's `max_daily_orders` and `max_position_qty` until it was recorded `placed`, so another
intent could take the account past a limit at the broker (seed 104). Its hold now counts until
its fate is known (`execution.account_state`). While True, orders whose record was neither
`placed` nor under a live lease when an intent was admitted are left out of that intent's
broker-side count."""


DAILY_COUNT_ACROSS_MIDNIGHT_ALLOWED = False
"""Closed (issue #12, `execution.account_state.counted_days`): a placed release counted its order
on its own clock's UTC day alone, so a process whose clock was still on yesterday admitted a
second order past `max_daily_orders` (seed 1211: an order placed at 00:00:00.3 and counted on the
new day; a redelivery whose clock ran 1 s behind saw yesterday's count, and the broker took its
order at 00:00:01.0). While True, the daily count is not judged on a day whose orders include one
that landed within CLOCK_SKEW_SECONDS of its start or end."""


class Violation(AssertionError):
    """An invariant broke; the message says which and how."""


@dataclass(frozen=True)
class Origin:
    """Who placed a broker order, for which intent, when."""

    actor: Actor
    key: tuple[str, str]
    step: int
    governed: bool = True
    """Placed under a lease admitted against the account's limits; False where the invocation
    read no limit (an operator set one since): a limit does not reach back to such an order."""
    zombie: bool = False
    """Placed by a process paused inside the broker call past its lease: the design lets such
    a late order pass the limits (its record is then repaired), so the limits' count skips it."""
    faults: int = 0
    """Store and broker faults its actor had met when the order landed (`at_end`)."""


def _only_changed(before: dict[str, Any], doc: dict[str, Any], name: str) -> bool:
    """Whether `doc` differs from `before` in the field `name` alone."""
    changed = {field for field in before.keys() | doc.keys() if before.get(field) != doc.get(field)}
    return changed == {name}


def _only_the_hold_ended(before: dict[str, Any], doc: dict[str, Any]) -> bool:
    """Whether `doc` differs from `before` only in its hold, now ended (`counted_lease_id`)."""
    return _only_changed(before, doc, "counted_lease_id") and doc["counted_lease_id"] is None


def _day(moment: datetime | None) -> str:
    return "?" if moment is None else moment.date().isoformat()


def _midnight_gap_open(today: list[Any]) -> bool:
    """Whether `DAILY_COUNT_ACROSS_MIDNIGHT_ALLOWED` exempts a day holding the orders `today`."""
    return DAILY_COUNT_ACROSS_MIDNIGHT_ALLOWED and any(
        _near_midnight(order.submitted_at) for order in today
    )


def _near_midnight(moment: datetime | None) -> bool:
    from tests.simulation.world import SETTINGS

    if moment is None:
        return False
    since = moment - moment.replace(hour=0, minute=0, second=0, microsecond=0)
    margin = timedelta(seconds=SETTINGS.clock_skew_seconds)
    return since < margin or timedelta(days=1) - since < margin


def _in_line(actor: Actor) -> bool:
    """Whether `actor` still waits in its account's line (it has not run since it queued)."""
    return actor.last_point.startswith("waits for its turn")


def reservation_path(key: tuple[str, str]) -> str:
    return f"tenants/{key[0]}/execution_reservations/{key[1]}"


def key_of(path: str) -> tuple[str, str]:
    parts = path.split("/")
    return parts[1], parts[3]


class Invariants:
    """Checks one world; raises `Violation`."""

    def __init__(self, world: World) -> None:
        self._world = world
        self._previous: dict[str, dict[str, Any]] = {}
        self.origins: dict[str, Origin] = {}
        self._orders_seen = 0
        self._commits_seen = -1
        self._acks_seen: tuple[Any, ...] = ()
        self.uncounted: dict[str, set[str]] = {}
        """Per lease, the orders its admission could not count (see the second known gap)."""
        self.fenced_acks: set[str] = set()
        """Messages acked by an attempt whose lease was no longer the record's."""
        self.lease_taken: dict[str, int] = {}
        """Per lease, the step at which it first held its reservation (its acquire's commit; a
        writer may draw its lease id long before, and wait for its account's turn meanwhile)."""

    # -- helpers the world uses ------------------------------------------------------------

    def lease_expiry(self, actor: Actor) -> datetime | None:
        """When `actor`'s lease lapses, where it still holds its intent's reservation."""
        if actor.intent_key is None:
            return None
        doc = self._world.db.peek(reservation_path(actor.intent_key))
        if doc is None or doc["lease_id"] != actor.lease_id or doc["status"] != "reserved":
            return None
        expires: datetime = doc["expires_at"]
        return expires

    def lease_lapsed_by(self, actor: Actor, moment: datetime) -> bool:
        """Whether `actor` still names its intent's reservation, by a lease lapsed at `moment`."""
        if actor.intent_key is None:
            return False
        doc = self._world.db.peek(reservation_path(actor.intent_key))
        return (
            doc is not None
            and doc["status"] == "reserved"
            and doc["lease_id"] == actor.lease_id
            and doc["expires_at"] <= moment
        )

    def holds_record(self, actor: Actor) -> bool:
        """Whether `actor`'s lease is its intent's reservation's (`reserved` or not)."""
        if actor.intent_key is None:
            return False
        doc = self._world.db.peek(reservation_path(actor.intent_key))
        return doc is not None and doc["lease_id"] == actor.lease_id

    def held_by_newer(self, actor: Actor) -> bool:
        """Whether another attempt holds `actor`'s intent under a live lease (by the world's
        time) that `actor` did not draw: it took over."""
        if actor.intent_key is None:
            return False
        doc = self._world.db.peek(reservation_path(actor.intent_key))
        return (
            doc is not None
            and doc["status"] == "reserved"
            and doc["lease_id"] not in {lease for lease, _ in actor.leases}
            and doc["expires_at"] > self._world.now
        )

    def broker_holds_order_of(self, key: tuple[str, str] | None) -> bool:
        """Whether the broker holds an order placed for intent `key`."""
        return any(origin.key == key for origin in self.origins.values())

    def lease_ends(self) -> list[datetime]:
        """When each `reserved` document's lease ends."""
        return [doc["expires_at"] for doc in self._docs().values() if doc["status"] == "reserved"]

    def lapsed_leases(self, now: datetime) -> dict[str, str]:
        """Reservation path -> lease id, of every `reserved` document lapsed at `now`."""
        return {
            path: doc["lease_id"]
            for path, doc in self._docs().items()
            if doc["status"] == "reserved" and doc["expires_at"] <= now
        }

    # -- checks ----------------------------------------------------------------------------

    def orders_placed_by(self, actor: Actor) -> None:
        """Attribute the orders the broker accepted since the last look to `actor` (the only one
        that ran since); check each one."""
        world = self._world
        if len(world.broker.orders) == self._orders_seen:
            return
        new = list(world.broker.orders.values())[self._orders_seen :]
        self._orders_seen = len(world.broker.orders)
        for order in new:
            if actor.intent_key is None:
                raise Violation(f"{actor.name} placed order {order.broker_order_id}")
            expires = self.lease_expiry(actor)
            # In the world's time, whoever's clock wrote the lease: the engine's margin covers
            # its own clock's offset and the other processes' (they may take over at their
            # reading of `expires_at`).
            lapsed = expires is None or expires <= world.now
            doc = world.db.view("execution_reservations").get(
                reservation_path(actor.intent_key), {}
            )
            self.origins[order.broker_order_id] = Origin(
                actor,
                actor.intent_key,
                world.step,
                governed=bool(doc.get("counts_against_budget")),
                zombie=lapsed and actor.paused_in_place,
                faults=actor.faults,
            )
            world.note(f"{actor.name}: ORDER {order.broker_order_id} accepted")
            mine = [o for o in self.origins.values() if o.key == actor.intent_key]
            if len(mine) > 1:
                raise Violation(f"intent {actor.intent_key} has {len(mine)} broker orders")
            if lapsed and not actor.paused_in_place:
                raise Violation(
                    f"{actor.name} placed {order.broker_order_id} without a live lease, and "
                    "was not paused inside the broker call: its budget was not held"
                )
            if not lapsed:
                self._check_broker_limits(actor, actor.intent_key[0])

    def after_step(self) -> None:
        """Check the world as the last step left it."""
        self.turn_waits()
        commits = self._world.db.commits_landed
        if commits == self._commits_seen:  # no write reached the store: only time moved
            self._check_acked(final=False)
            return
        self._commits_seen = commits
        docs = self._docs()
        for path, doc in docs.items():
            before = self._previous.get(path)
            if before != doc:
                self._check_write(path, before, doc, docs)
            self._check_names_own_order(path, doc)
        self._previous = docs
        self._check_holds_end_with_leases(docs)
        self._check_acked(final=False)

    def turn_waits(self) -> None:
        """No writer waits for its account's turn longer than the turns' timeout: a holder that
        is paused or dead (a hung thread) delays the account's writers of its instance by that
        much at most, then each goes ahead without the turn (the barge-in)."""
        world = self._world
        bound = timedelta(seconds=world.turn_timeout)
        for actor in world.actors:
            since = actor.blocked_since
            if actor.state != "blocked" or since is None or world.now - since <= bound:
                continue
            if actor.resume_at is None or actor.resume_at - since > bound:
                raise Violation(
                    f"{actor.name} has waited {(world.now - since).total_seconds():.1f}s for its "
                    f"account's turn, past the {world.turn_timeout:g}s timeout, and waits on"
                )

    def at_ack(self, actor: Actor, message: Message, result: ExecutionResult) -> None:
        """An ack never contradicts an order the broker held when the attempt took its lease,
        nor leaves an ended attempt's order unknown to a final record."""
        doc = self._world.db.peek(reservation_path(message.key)) or {}
        fenced = result.outcome is not Outcome.DUPLICATE and doc.get("lease_id") != actor.lease_id
        if fenced and result.broker_order_id is None:
            self.fenced_acks.add(message.message_id)
        self._check_ack_knows_orders(actor, message)
        if result.outcome is Outcome.DUPLICATE:
            recorded = result.recorded_outcome.value if result.recorded_outcome else None
            if recorded not in TERMINAL:
                raise Violation(f"{actor.name} acked a duplicate of a {recorded} record")
            return
        if not actor.leases:
            return
        took_lease_at = actor.leases[-1][1]
        for order_id, origin in self.origins.items():
            if origin.key != message.key or origin.step >= took_lease_at:
                continue
            if result.outcome in CONTRADICTING or result.broker_order_id != order_id:
                raise Violation(
                    f"{actor.name} acked {result.outcome.value} "
                    f"(order {result.broker_order_id}) although the broker already held "
                    f"{order_id}, placed by {origin.actor.name} before this attempt's lease"
                )

    def _check_ack_knows_orders(self, actor: Actor, message: Message) -> None:
        """An ack leaves every order of its intent whose placing attempt has ended named by a
        final record. That attempt settled the record, or marked it (`unsettled_order`) where a
        newer attempt still held a live lease, and a delivery that meets a marked record (the
        newer attempt's own release included) asks the broker before it acks. Exempt: the placing
        attempt was killed, or a fault struck it after its order landed (the settlement or the
        marker could not be written; the reconciler is the net)."""
        doc = self._world.db.peek(reservation_path(message.key)) or {}
        if doc.get("status") == "reserved" or doc.get("outcome") not in TERMINAL:
            return  # not final: the next attempt asks the broker first (`_check_acked` judges)
        for order_id, origin in self.origins.items():
            placer = origin.actor
            if origin.key != message.key or placer.alive or placer.state == "killed":
                continue
            if placer.faults > origin.faults or doc.get("broker_order_id") == order_id:
                continue
            raise Violation(
                f"{actor.name} acked {message.message_id} while its record is "
                f"{doc.get('status')}/{doc.get('outcome')} (order {doc.get('broker_order_id')}, "
                f"marker {doc.get('unsettled_order')}) although the broker holds {order_id}, "
                f"placed by {placer.name}, which ended: only the reconciler would find it"
            )

    def at_end(self, actor: Actor) -> None:
        """An attempt that placed an order and ended (answered, not killed) leaves it known: its
        record names the order, or is not final yet (`reserved`, or released with a retryable
        outcome: the next attempt asks the broker by client order id before anything else).

        A final record that does not name the order (a newer attempt recorded `halted` or
        `stale` while this one's answer was lost) would stay so until the reconciler: the
        attempt settles it itself (`ExecutionEngine._settle_lost_answer`, `_settle_outlived`),
        or, where a newer lease is live, marks it (`unsettled_order`) for the delivery that will
        meet it before an ack; a marked record with its message acked already is a violation.
        Exempt where a store or broker fault struck the attempt after its order landed: the
        settlement could not be written, and the reconciler is the net.
        """
        for order_id, origin in self.origins.items():
            if origin.actor is not actor or actor.faults > origin.faults:
                continue
            doc = self._world.db.peek(reservation_path(origin.key)) or {}
            if doc.get("broker_order_id") == order_id:
                continue
            if doc.get("unsettled_order") and not self._acked(actor.message_id):
                continue  # the delivery that meets the marked record settles it before its ack
            final = doc.get("status") != "reserved" and doc.get("outcome") in TERMINAL
            # A newer lease taken after the order landed asks the broker first (a take-over).
            newer = (
                doc.get("status") == "reserved"
                and doc.get("lease_id") != actor.lease_id
                and self.lease_taken.get(doc.get("lease_id", ""), -1) < origin.step
            )
            if final or newer:
                raise Violation(
                    f"{actor.name} ended leaving its order {order_id} under a record "
                    f"{doc.get('status')}/{doc.get('outcome')} of lease {doc.get('lease_id')} "
                    f"that names {doc.get('broker_order_id')} and carries no unsettled_order "
                    "marker: only the reconciler would find it"
                )

    def _acked(self, message_id: str | None) -> bool:
        return any(m.acked for m in self._world.messages if m.message_id == message_id)

    def after_sweep(self, started: datetime, lapsed: dict[str, str], report: Any) -> None:
        """A clean sweep leaves none of the leases lapsed at its start `reserved`."""
        if report.errors or not report.complete:
            return
        for path, lease_id in lapsed.items():
            doc = self._world.db.peek(path) or {}
            if doc.get("status") == "reserved" and doc.get("lease_id") == lease_id:
                raise Violation(
                    f"{path} is still reserved by lapsed lease {lease_id} after a clean sweep "
                    f"that started at {started.isoformat()}"
                )

    def final(self) -> None:
        docs = self._docs()
        for path, doc in docs.items():
            if doc["status"] == "reserved":
                raise Violation(f"{path} is still reserved after the final sweep")
        for order_id, origin in self.origins.items():
            doc = docs.get(reservation_path(origin.key)) or {}
            if doc.get("outcome") != "placed" or doc.get("broker_order_id") != order_id:
                raise Violation(
                    f"broker order {order_id} of {origin.key} is recorded "
                    f"{doc.get('status')}/{doc.get('outcome')} with order "
                    f"{doc.get('broker_order_id')} after the final reconcile"
                )
            self._check_forbidden_order_cancelled(order_id, doc)
        for path, state in self._world.db.view("execution_inflight").items():
            if state.get("leases"):
                raise Violation(
                    f"{path} still holds {sorted(state['leases'])} after the final reconcile: "
                    "a count kept for an unknown fate was never settled"
                )
        self._check_acked(final=True)
        self._check_dead_letters()

    # -- the checks' parts -----------------------------------------------------------------

    def _check_dead_letters(self) -> None:
        """A dead letter says the intent can never execute: never one whose order the broker
        holds (issue #11: a refused lookup dead-lettered a placed order)."""
        for message in self._world.messages:
            orders = [o for o, origin in self.origins.items() if origin.key == message.key]
            if message.dead_lettered and orders:
                raise Violation(
                    f"message {message.message_id} ({message.key}) was dead-lettered although "
                    f"the broker holds its order {orders[0]}"
                )

    def _check_forbidden_order_cancelled(self, order_id: str, doc: dict[str, Any]) -> None:
        """An order its record had forbidden (`stale`, `halted`...) is cancelled, or the repair
        says why not (issue #11: "unless it was cancelled and the record says so")."""
        repair = doc.get("repair") or {}
        if repair.get("previous_outcome") not in {o.value for o in CONTRADICTING}:
            return
        order = next(o for o in self._world.broker.orders.values() if o.broker_order_id == order_id)
        cancel = str(repair.get("cancel"))
        if order.status != "canceled" and not cancel.startswith(
            ("not_cancelable", "refused", "failed")
        ):
            raise Violation(
                f"order {order_id} was forbidden by its record ({repair.get('previous_outcome')}) "
                f"but is {order.status}, and the repair says cancel={cancel}"
            )

    def _docs(self) -> dict[str, dict[str, Any]]:
        return self._world.db.view("execution_reservations")

    def _check_write(
        self,
        path: str,
        before: dict[str, Any] | None,
        doc: dict[str, Any],
        docs: dict[str, dict[str, Any]],
    ) -> None:
        """Who may have written `doc` over `before` (see the module docstring)."""
        world = self._world
        writer = world.ran
        if writer is None:
            raise Violation(f"{path} changed while no process ran")
        lease_id = doc["lease_id"]
        if before is None or before["lease_id"] != lease_id:
            self.lease_taken.setdefault(lease_id, world.step)
            owner = world.lease_owner.get(lease_id)
            # A writer holding its account's turn carries out, in its own commit, the acquires
            # of the writers waiting in line in its instance (`account_turns`).
            carried = self._carries_for(writer, owner)
            if owner is not writer and not carried:
                raise Violation(f"{writer.name} wrote {path} with lease {lease_id} it never drew")
            if owner is not writer and owner is not None and not _in_line(owner):
                # The carried acquire of a waiter that gave up (seed 1137): a lease nobody uses.
                world.injected["turn.carried_after_its_waiter_left"] += 1
            self._check_lease_length(writer, path, doc)
            taken_live = before is not None and before["status"] == "reserved"
            # Judged by the writer's clock: the lease's end is by another process's clock, and
            # the engine leaves a margin for the difference (CLOCK_SKEW_SECONDS).
            if taken_live and before is not None and before["expires_at"] > world.clock_of(writer):
                raise Violation(f"{writer.name} took over {path}'s live lease")
            if doc["status"] == "reserved" and doc.get("counts_against_budget"):
                self._check_budget(writer, path, docs)
                self.uncounted[lease_id] = {o for o in self.origins if self._gave_limits_back(o)}

            return
        if doc.get("repair") != before.get("repair"):
            return  # a settlement to the broker's order: `_check_names_own_order` judges it
        if _only_changed(before, doc, "unsettled_order"):
            return  # an outlived attempt's marker (no fence by design), or a delivery clearing it
        if writer.kind == "reconcile" and _only_the_hold_ended(before, doc):
            self._check_hold_release(writer, path, before)
            return
        if writer.kind == "sweep":
            if not (
                before["status"] == "reserved"
                and doc["status"] == "expired"
                and before["expires_at"] <= world.clock_of(writer)
            ):
                raise Violation(f"{writer.name} changed {path} other than expiring a lapsed lease")
            return
        if writer.kind != "delivery" or not self._writes_for(writer, lease_id):
            raise Violation(
                f"a fenced write landed: {writer.name} (leases {writer.leases}) changed {path} "
                f"held by lease {lease_id}: {before.get('status')}/{before.get('outcome')} -> "
                f"{doc.get('status')}/{doc.get('outcome')}"
            )

    def _check_lease_length(self, writer: Actor, path: str, doc: dict[str, Any]) -> None:
        """A lease runs at most its TTL from the moment its writer commits it (by the writer's
        clock, which decided it no later): a carried acquire that lands late, after its waiter
        gave up, holds a lease nobody uses, but no longer than a lease used."""
        from tests.simulation.world import TTL_SECONDS

        latest = self._world.clock_of(writer) + timedelta(seconds=TTL_SECONDS)
        if doc["status"] == "reserved" and doc["expires_at"] > latest:
            raise Violation(
                f"{writer.name} wrote {path} with lease {doc['lease_id']} until "
                f"{doc['expires_at'].isoformat()}, past its TTL from the commit "
                f"({latest.isoformat()})"
            )

    def _check_holds_end_with_leases(self, docs: dict[str, dict[str, Any]]) -> None:
        """A hold counts against the in-flight budget (its `expires_at` is ahead) only while its
        lease holds its intent's reservation: once the lease ended (released, expired by the
        sweeper, taken over), the hold may stay for the position and daily orders, its fate
        unknown, but it gives the budget back. Allowed: the clocks' difference (a hold's end is
        by its writer's clock)."""
        from tests.simulation.world import MAX_CLOCK_OFFSET_SECONDS

        world = self._world
        ahead = world.now + timedelta(seconds=2 * MAX_CLOCK_OFFSET_SECONDS)
        for path, state in world.db.view("execution_inflight").items():
            tenant = path.split("/")[1]
            for lease_id, hold in (state.get("leases") or {}).items():
                if hold["expires_at"] <= ahead:
                    continue
                doc = docs.get(reservation_path((tenant, hold["client_intent_id"]))) or {}
                if doc.get("status") != "reserved" or doc.get("lease_id") != lease_id:
                    raise Violation(
                        f"{path} counts hold {lease_id} against the budget until "
                        f"{hold['expires_at'].isoformat()}, but its lease ended: the reservation "
                        f"is {doc.get('status')} by lease {doc.get('lease_id')}"
                    )

    def _writes_for(self, writer: Actor, lease_id: str) -> bool:
        """Whether `writer` may end the attempt of `lease_id`: its own, or that of a writer waiting
        in line in its instance, whose release it carries out in its own commit under that
        release's fence (`account_turns`), as it carries their acquires."""
        if lease_id in [lease for lease, _ in writer.leases]:
            return True
        # Only for a waiter still in line (it has not run since it queued its release): an
        # outlived attempt's unfenced release in the same instance (the mutant) must not pass for
        # one carried.
        owner = self._world.lease_owner.get(lease_id)
        if owner is None or not self._carries_for(writer, owner):
            return False
        # Or one that gave up waiting behind a paused carrier (seed 7678): the release's fence
        # still held, so it had written nothing since; it learns from its own fence what landed.
        return _in_line(owner) or owner.queued_release_of == lease_id

    @staticmethod
    def _carries_for(writer: Actor, owner: Actor | None) -> bool:
        """Whether `writer` may have carried out work `owner` queued for its account's turn: a
        writer of the same instance. The owner may have ended meanwhile (seed 1137): a carrier
        paused between claiming the line and committing it lands the work after its waiter gave
        up and went ahead alone. Each piece keeps its own precondition (a create, a release's
        fence), so the late commit lands only where the waiter wrote nothing: a lease nobody will
        use, counted until it lapses and the sweeper expires it."""
        return owner is not None and owner.kind == "delivery" and owner.instance == writer.instance

    def _limits_in_force(self, actor: Actor, tenant: str, account: str) -> dict[str, float]:
        """Each limit at its loosest while `actor` ran (the operator may change one meanwhile);
        a limit unset at any moment of that time is absent."""
        history = self._world.limits.get((tenant, account), [])
        since = actor.first_step or 0
        in_force = [v for s, v in history if s <= since][-1:] + [v for s, v in history if s > since]
        names = {name for limits in in_force for name in limits}
        loosest: dict[str, float] = {}
        for name in names:
            values = [limits.get(name) for limits in in_force]
            if values and all(v is not None for v in values):
                loosest[name] = max(float(v) for v in values if v is not None)
        return loosest

    def _check_broker_limits(self, actor: Actor, tenant: str) -> None:
        """What the broker holds for the account once `actor`'s order landed: its orders on the
        order's day (UTC, the broker's time) and its net position, which must not grow past the
        limit either way (an order that shrinks it is always allowed)."""
        world = self._world
        key = actor.intent_key
        assert key is not None
        account = world.account_of[key]
        limits = self._limits_in_force(actor, tenant, account)
        uncounted = self.uncounted.get(actor.lease_id or "", set())
        orders = [
            order
            for order in world.broker.orders.values()
            if self.origins[order.broker_order_id].key[0] == tenant
            and world.account_of[self.origins[order.broker_order_id].key] == account
            and not self.origins[order.broker_order_id].zombie
            and not (UNKNOWN_ORDERS_UNCOUNTED_ALLOWED and order.broker_order_id in uncounted)
            and self.origins[order.broker_order_id].governed
        ]
        if not orders or self.origins[orders[-1].broker_order_id].actor is not actor:
            return  # the new order is not governed (placed under no limit, or a zombie's)
        new = orders[-1]
        day = _day(new.submitted_at)
        today = [order for order in orders if _day(order.submitted_at) == day]
        # Exact decimals, as the service decides them (`execution.positions`): no tolerance.
        position = sum((_signed(order.qty, order.side) for order in orders), Decimal(0))
        before = position - _signed(new.qty, new.side)
        grows = abs(position) > abs(before)
        held = {"max_daily_orders": Decimal(len(today)), "max_position_qty": abs(position)}
        for name in ("max_daily_orders", "max_position_qty"):
            if name == "max_position_qty" and not grows:
                continue
            if name == "max_daily_orders" and _midnight_gap_open(today):
                continue
            if name in limits and held[name] > money_decimal(limits[name]):
                counted = sorted({"/".join(self.origins[o.broker_order_id].key) for o in orders})
                raise Violation(
                    f"{actor.name}'s order takes {tenant}/{account} to {held[name]:g} against "
                    f"{name}={limits[name]:g} on {day} (orders of {', '.join(counted)}; "
                    f"position {before:g} -> {position:g})"
                )

    def _gave_limits_back(self, order_id: str) -> bool:
        """Whether the record of the order's intent no longer counts it (see the known gap)."""
        doc = self._world.db.view("execution_reservations").get(
            reservation_path(self.origins[order_id].key), {}
        )
        counted = (
            doc.get("status") == "reserved"
            and doc["expires_at"] > self._world.now
            and doc.get("counts_against_budget")  # a stale intent's lease counts nowhere
        )
        return doc.get("outcome") != "placed" and not counted

    def _check_budget(self, writer: Actor, path: str, docs: dict[str, dict[str, Any]]) -> None:
        world = self._world
        tenant = key_of(path)[0]
        account = docs[path]["broker_account_id"]
        live = sum(
            float(doc["amount_usd"])
            for other, doc in docs.items()
            if key_of(other)[0] == tenant
            and doc["broker_account_id"] == account
            and doc["status"] == "reserved"
            and doc.get("counts_against_budget")
            and doc["expires_at"] > world.clock_of(writer)  # a lapse is the admitter's to judge
        )
        limit = self._limits_in_force(writer, tenant, account).get("max_inflight_usd")
        if limit is not None and live > limit + 1e-9:
            raise Violation(
                f"{writer.name} admitted {path}: {live:g} USD in flight on {tenant}/{account} "
                f"over the budget of {limit:g}"
            )

    def _check_hold_release(self, writer: Actor, path: str, before: dict[str, Any]) -> None:
        """The reconciler ends an intent's hold only where the broker holds no order of it and
        no attempt of it can still reach the broker."""
        from tests.simulation.world import SETTINGS

        key = key_of(path)
        # A zombie's order (its process paused inside the call, past its lease) may land between
        # the reconciler's lookup and its write: the design lets such an order pass the limits
        # (as `_check_broker_limits` does), and the record is repaired to it later (seed 8657).
        ordered = [
            o for o, origin in self.origins.items() if origin.key == key and not origin.zombie
        ]
        if ordered:
            raise Violation(
                f"the reconciler ended {path}'s hold although the broker holds {ordered}"
            )
        margin = timedelta(seconds=SETTINGS.broker_call_seconds + SETTINGS.clock_skew_seconds)
        if before["expires_at"] + margin > self._world.clock_of(writer):
            raise Violation(
                f"the reconciler ended {path}'s hold while lease {before['lease_id']} (until "
                f"{before['expires_at'].isoformat()}) might still reach the broker"
            )

    def _check_names_own_order(self, path: str, doc: dict[str, Any]) -> None:
        if doc.get("outcome") != "placed":
            return
        order_id = doc.get("broker_order_id")
        origin = self.origins.get(order_id) if order_id else None
        if origin is None or origin.key != key_of(path):
            whose = origin.key if origin else "no intent"
            raise Violation(f"{path} is recorded placed with order {order_id}, placed for {whose}")

    def _check_acked(self, *, final: bool) -> None:
        world = self._world
        seen = (world.db.commits_landed, world.now, [m.acked for m in world.messages], final)
        if seen == self._acks_seen and not any(a.state == "killed" for a in world.actors):
            return  # nothing it depends on changed (a kill may end a window)
        self._acks_seen = seen
        for message in world.messages:
            if not message.acked or message.dead_lettered:
                continue
            if FENCED_ACKS_ALLOWED and message.message_id in self.fenced_acks:
                continue
            doc = world.db.peek(reservation_path(message.key)) or {}
            if doc.get("status") == "released" and doc.get("outcome") in TERMINAL:
                continue
            if world.db.peek(f"execution_dead_letters/{message.message_id}") is not None:
                continue
            holder = world.lease_owner.get(doc.get("lease_id", ""))
            held = doc.get("status") == "reserved" and (
                doc["expires_at"] > world.now or (holder is not None and holder.alive)
            )
            ordered = any(origin.key == message.key for origin in self.origins.values())
            if (held or ordered) and not final:
                continue  # a live attempt holds it, or the reconciler will: the design's windows
            raise Violation(
                f"message {message.message_id} ({message.key}) was acked but its record is "
                f"{doc.get('status')}/{doc.get('outcome')}"
            )


def _signed(qty: float, side: str) -> Decimal:
    """An order's quantity as the broker reads it (its shortest decimal), signed by its side."""
    exact = money_decimal(qty)
    return exact if side == "buy" else -exact
