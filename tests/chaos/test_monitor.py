"""The chaos monitor's rule "in-flight leases match live reservations", held to the product.

Seed 632106 (N=1000) once saw lease dd94143f of ci-632106-00558 counted in its account's state
while its reservation was not live, in one snapshot, during a Firestore outage done with an
emulator export and import; its release had failed with the store down and attempt 3 took over.

Three suspects, each tested here:
- the product: a gap between the account-state hold and the record along that very sequence
  (acquire, store down, release fails, lease lapses or a jumped sweep expires it, take-over).
  The rule is run on the documents after each step, on the real adapters: it holds throughout.
- the rule's `counted_lease_id` excuse (a hold the record keeps), for every way a take-over or a
  sweep leaves the hold: unit tests of `lease_findings`.
- the snapshot: the emulator's import stamps its batches at different times, so a `read_time`
  inside it shows a database the product never held. Reproduced on a real import; the monitor
  now judges only snapshots of a whole database (`store_lives`).

And the rig's jumped sweep marks each lease it expires before the expiry can be seen, so that a
snapshot never sees a jump's expiry without knowing it was one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from google.cloud import firestore

from execution.brokers.paper import PaperBroker
from execution.clock import FakeClock, system_clock
from execution.engine import ExecutionEngine
from execution.errors import OutcomeUnrecordedError
from execution.firestore.reservations import FirestoreReservationManager
from execution.firestore.sweeper_store import FirestoreExpiredLeases
from execution.models import BrokerOrder, OrderRequest, TradeIntent
from execution.reservations import Acquired, ReservationRequest
from execution.sweeper import ExpiredLease, Sweeper
from tests.chaos.harness import MarkedExpiries, OwnedFirestore
from tests.chaos.invariants import (
    Monitor,
    Observation,
    _excuse,
    closed_unfilled_as_recorded,
    lease_findings,
    live_counted,
    unexpired_leases,
)
from tests.chaos.store_lives import StoreLives
from tests.chaos.workload import Account
from tests.support.builders import (
    FAST_POLICY,
    CountingBroker,
    client_at,
    emulator_service,
    fast_settings,
    make_intent,
    reservation,
)
from tests.support.tcp_proxy import CuttableProxy
from tests.support.waiting import wait_until

NOW = datetime.fromisoformat("2026-01-05T14:30:00+00:00")
TTL = timedelta(seconds=fast_settings().reservation_ttl_seconds)


def entry(intent_id: str, expires_at: datetime, amount: float = 100.0) -> dict[str, Any]:
    """One `leases` entry of an account-state document."""
    return {"client_intent_id": intent_id, "amount_usd": amount, "expires_at": expires_at}


def record(intent_id: str, lease_id: str, **fields: Any) -> dict[str, Any]:
    """A reservation document with what the rule reads; live and counted unless overridden."""
    return {
        "tenant_id": "limits-co",
        "broker_account_id": "acct-daily",
        "client_intent_id": intent_id,
        "lease_id": lease_id,
        "status": "reserved",
        "counts_against_budget": True,
        "counted_lease_id": lease_id,
        "expires_at": NOW + TTL,
        "amount_usd": 100.0,
        **fields,
    }


def findings_at(
    records: list[dict[str, Any]], state: dict[str, Any], at: datetime = NOW
) -> list[str]:
    """The rule on one account's documents as of `at`: the kinds of what it flags."""
    reserved = [r for r in records if r["status"] == "reserved"]
    held = live_counted(reserved, at).get(("limits-co", "acct-daily"), {})
    by_intent = {r["client_intent_id"]: r for r in records}

    def kept_hold(intent_id: str, lease_id: str) -> bool:
        return (by_intent.get(intent_id) or {}).get("counted_lease_id") == lease_id

    found = lease_findings("limits-co/acct-daily", held, unexpired_leases(state, at), kept_hold)
    return [kind for kind, _key, _detail in found]


# -- the rule itself -------------------------------------------------------------------------


def test_a_live_reservation_and_its_counted_lease_match() -> None:
    state = {"leases": {"L2": entry("i", NOW + TTL)}}

    assert findings_at([record("i", "L2")], state) == []


def test_a_hold_the_record_keeps_after_a_jumped_sweep_is_no_leak() -> None:
    expired = record("i", "L2", status="expired", outcome="expired")
    state = {"leases": {"L2": entry("i", NOW + TTL)}}  # the sweep's clock was a TTL ahead

    assert findings_at([expired], state) == []


def test_a_hold_the_record_keeps_after_a_release_of_unknown_fate_is_no_leak() -> None:
    released = record("i", "L2", status="released", outcome="exception")
    state = {"leases": {"L2": entry("i", NOW)}}  # its lease ended at the release

    assert findings_at([released], state, at=NOW - timedelta(seconds=1)) == []


def test_an_admitted_take_over_counts_its_own_lease_only() -> None:
    third = record("i", "L3", attempt=3)
    state = {"leases": {"L3": entry("i", NOW + TTL)}}  # admit() replaced L2 in the same commit

    assert findings_at([third], state) == []


def test_a_take_over_that_was_not_admitted_keeps_naming_the_earlier_hold() -> None:
    third = record("i", "L3", attempt=3, counts_against_budget=False, counted_lease_id="L2")
    state = {"leases": {"L2": entry("i", NOW + TTL)}}  # L2 expired early by a jumped sweep

    assert findings_at([third], state) == []


def test_a_lease_counted_for_a_released_record_that_names_no_hold_is_leaked() -> None:
    released = record("i", "L2", status="released", outcome="placed", counted_lease_id=None)
    state = {"leases": {"L2": entry("i", NOW + TTL)}}

    assert findings_at([released], state) == ["leaked_lease"]


def test_an_earlier_lease_still_counted_beside_the_take_over_is_leaked() -> None:
    third = record("i", "L3", attempt=3)
    state = {"leases": {"L2": entry("i", NOW + TTL), "L3": entry("i", NOW + TTL)}}

    assert findings_at([third], state) == ["leaked_lease"]


def test_a_live_counted_reservation_missing_from_the_account_state_is_uncounted() -> None:
    assert findings_at([record("i", "L2")], {"leases": {}}) == ["uncounted"]


# -- which snapshots are judged ---------------------------------------------------------------


def jumped_record(**fields: Any) -> dict[str, Any]:
    """A record whose lease a jumped sweep expired, its order at the broker not yet recorded."""
    at = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
    return {"status": "expired", "outcome": "expired", "expires_at": at, **fields}


def test_a_jumped_order_whose_record_keeps_its_hold_is_counted_not_excused() -> None:
    doc = jumped_record(counted_lease_id="lease-1")

    assert _excuse(doc, {}, datetime(2026, 1, 5, 14, 31, tzinfo=UTC), jumped=True) is None


def test_a_jumped_order_whose_record_ended_its_hold_is_excused_as_a_clock_jump() -> None:
    doc = jumped_record(outcome="exception", counted_lease_id=None)

    assert _excuse(doc, {}, datetime(2026, 1, 5, 14, 31, tzinfo=UTC), jumped=True) == "clock_jump"


def test_a_read_time_before_the_import_settled_is_not_judged() -> None:
    lives = StoreLives()
    lives.restart_begins()
    lives.import_settled(NOW)

    assert lives.life_for(NOW - timedelta(microseconds=1)) is None
    assert lives.life_for(NOW) is not None


def test_no_snapshot_is_judged_while_the_emulator_restarts() -> None:
    lives = StoreLives()
    lives.restart_begins()

    assert lives.life_for(NOW + timedelta(days=1)) is None


class RestartWhileReading(Monitor):
    """A monitor whose reads straddle an emulator restart: they saw a leak in the old life."""

    def __init__(self, lives: StoreLives) -> None:
        super().__init__(None, (), lives=lives)  # type: ignore[arg-type]  # observe reads nothing
        self.restarting = lives

    def observe(self, at: datetime) -> Observation:
        self.restarting.restart_begins()
        return Observation(findings=[("leaked_lease", "k", "seen across a restart")])


def test_a_snapshot_whose_reads_straddle_a_restart_is_not_kept() -> None:
    monitor = RestartWhileReading(StoreLives())

    judged = monitor.judge(NOW)

    assert judged is False
    assert monitor.violations == {}
    assert (monitor.snapshots, monitor.unjudged) == (0, 1)


# -- the snapshot across a real emulator import ----------------------------------------------

BUDGETED = tuple(
    Account("limits-co", f"acct-{n:03d}", max_inflight_usd=1000.0, max_order_notional_usd=1e4)
    for n in range(120)
)
FILLER = 400
"""Finished reservations beside the live ones: with them the export holds more than one of the
emulator's import batches (about 500 documents)."""


def seed_live_leases(db: firestore.Client) -> None:
    """One live counted lease per account, acquired through the real adapter, and filler."""
    batch = db.batch()
    for account in BUDGETED:
        batch.set(
            db.collection("tenants", account.tenant_id, "accounts").document(account.account_id),
            account.document(),
        )
    for n in range(FILLER):
        ref = db.collection("tenants", "filler", "execution_reservations").document(f"f-{n:04d}")
        batch.set(ref, {"status": "released", "client_intent_id": f"f-{n:04d}"})
    batch.commit()
    manager = FirestoreReservationManager(
        db, clock=system_clock, ttl=timedelta(hours=1), policy=FAST_POLICY
    )
    for account in BUDGETED:
        request = ReservationRequest(
            tenant_id=account.tenant_id,
            broker_account_id=account.account_id,
            client_intent_id=f"ci-{account.account_id}",
            symbol="AAPL",
            amount_usd=100.0,
            payload_hash="h",
            side="buy",
            qty=1.0,
        )
        assert isinstance(manager.acquire(request), Acquired)


def import_stamps(db: firestore.Client) -> list[datetime]:
    """The distinct update times the import gave the accounts' states and reservations."""
    refs = [
        db.collection("tenants", a.tenant_id, collection).document(name)
        for a in BUDGETED
        for collection, name in (
            ("execution_inflight", a.account_id),
            ("execution_reservations", f"ci-{a.account_id}"),
        )
    ]
    return sorted({snap.update_time for snap in db.get_all(refs)})


@pytest.fixture
def restarted(tmp_path: Path) -> Iterator[tuple[firestore.Client, OwnedFirestore]]:
    """An emulator of its own holding live leases, restarted with an import of its export."""
    emulator = OwnedFirestore(tmp_path)
    project = "demo-chaos-monitor-import"
    try:
        emulator.start()
        with client_at(emulator.host, project) as seeding:
            seed_live_leases(seeding)
        emulator.restart_keeping_data(project)
        with client_at(emulator.host, project) as db:
            yield db, emulator
    finally:
        emulator.stop()


@pytest.mark.timeout(600)
def test_a_snapshot_inside_an_emulator_import_is_torn_and_not_judged(
    restarted: tuple[firestore.Client, OwnedFirestore],
) -> None:
    db, emulator = restarted
    monitor = Monitor(db, BUDGETED, lives=emulator.lives, read_timeout=60)
    stamps = import_stamps(db)
    inside = [early + (late - early) / 2 for early, late in pairwise(stamps)]
    torn = [at for at in inside if monitor.observe(at).findings]

    judged_inside = [monitor.judge(at) for at in inside]
    judged_after = monitor.judge(system_clock())

    assert len(stamps) > 1, "the import stamped every document at once: nothing can tear"
    assert torn, "no read_time inside the import showed a lease without its reservation"
    assert judged_inside == [False] * len(inside)
    assert judged_after is True
    assert monitor.violations == {}
    assert set(monitor.peak.values()) == {100.0}


# -- the product along the sequence of seed 632106 -------------------------------------------


class StoreDownInsideTheCall(CountingBroker):
    """The paper broker (on its own connection), whose next calls run `inside` after the
    broker acted and before the answer returns: the rule is checked there, or the store cut."""

    def __init__(self, inner: PaperBroker) -> None:
        super().__init__(inner)
        self.inside: list[Callable[[], None]] = []

    def place_order(self, order: OrderRequest) -> BrokerOrder:
        placed = super().place_order(order)
        self._run_inside()
        return placed

    def get_order_by_client_order_id(
        self, tenant_id: str, broker_account_id: str, client_order_id: str
    ) -> BrokerOrder | None:
        found = super().get_order_by_client_order_id(tenant_id, broker_account_id, client_order_id)
        self._run_inside()
        return found

    def _run_inside(self) -> None:
        steps, self.inside = self.inside, []
        for step in steps:
            step()


@pytest.fixture
def proxy() -> Iterator[CuttableProxy]:
    cuttable = CuttableProxy(os.environ["FIRESTORE_EMULATOR_HOST"])
    yield cuttable
    cuttable.close()


class Sequence:
    """Drives one budgeted intent through the engine and checks the rule after each step."""

    def __init__(self, db: firestore.Client, proxy: CuttableProxy, clients: ExitStack) -> None:
        self.db, self.proxy, self._clients = db, proxy, clients
        self.clock = FakeClock()
        self.broker = StoreDownInsideTheCall(PaperBroker(db, clock=self.clock, policy=FAST_POLICY))
        self.intent: TradeIntent = make_intent(tenant_id="limits-co")
        self.account = (self.intent.tenant_id, self.intent.broker_account_id)
        db.collection("tenants", self.intent.tenant_id, "accounts").document(
            self.intent.broker_account_id
        ).set({"max_inflight_usd": 400.0, "max_daily_orders": 40})
        self.steps: list[tuple[str, list[str]]] = []

    def check(self, step: str) -> None:
        """The rule on the documents as they are now (the fake clock's now)."""
        tenant, account = self.account
        reserved = [
            snap.to_dict() or {}
            for snap in self.db.collection("tenants", tenant, "execution_reservations")
            .where(filter=firestore.FieldFilter("status", "==", "reserved"))
            .stream()
        ]
        at = self.clock()
        held = live_counted(reserved, at).get(self.account, {})
        state = self.db.collection("tenants", tenant, "execution_inflight").document(account)
        leases = unexpired_leases(state.get().to_dict() or {}, at)

        def kept_hold(intent_id: str, lease_id: str) -> bool:
            doc = reservation(self.db, tenant, intent_id)
            return bool(doc.get("counted_lease_id") == lease_id)

        found = lease_findings("/".join(self.account), held, leases, kept_hold)
        self.steps.append((step, [detail for _kind, _key, detail in found]))

    def redelivered(self) -> ExecutionEngine:
        """The engine of a fresh instance (a redelivery), reaching the store through the proxy."""
        client = self._clients.enter_context(client_at(self.proxy.address, self.db.project))
        return emulator_service(client, self.clock, broker=self.broker).engine

    def restore(self) -> None:
        """End the outage, and wait (bounded) until a call through the proxy is answered: gRPC
        shares one subchannel per address, whose reconnect backoff outlasts the cut."""
        self.proxy.restore()
        probe = self._clients.enter_context(client_at(self.proxy.address, self.db.project))

        def answered() -> bool:
            try:
                probe.collection("chaos").document("probe").get(retry=None, timeout=1)
            except Exception:
                return False
            return True

        wait_until(answered, timeout=60, what="the store answering through the proxy again")

    def attempt_with_the_store_down_at_release(self, name: str) -> None:
        """An attempt whose broker call acts, then the store goes down before its release."""
        self.broker.inside = [lambda: self.check(f"{name}: inside its broker call"), self.proxy.cut]
        with pytest.raises(OutcomeUnrecordedError):
            self.redelivered().execute_intent(self.intent)
        self.check(f"{name}: its release failed with the store down")
        self.restore()

    def lapse(self) -> None:
        self.clock.advance(TTL.total_seconds() + 1)
        self.check("the lease lapsed")

    def jumped_sweep(self) -> None:
        """A sweep whose clock reads two TTLs ahead: it expires the live lease."""
        sweeper = Sweeper(
            FirestoreExpiredLeases(self.db, policy=FAST_POLICY),
            clock=lambda: self.clock() + 2 * TTL,
            deadline_seconds=10.0,
        )
        assert sweeper.sweep().expired == 1
        self.check("a jumped sweep expired the live lease")

    def flagged(self) -> list[tuple[str, list[str]]]:
        return [(step, found) for step, found in self.steps if found]


@pytest.fixture
def clients() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


def test_store_down_at_release_then_a_take_over_keeps_the_hold_and_the_record_in_step(
    db: firestore.Client, proxy: CuttableProxy, clients: ExitStack
) -> None:
    run = Sequence(db, proxy, clients)

    run.attempt_with_the_store_down_at_release("attempt 1")
    run.lapse()
    run.attempt_with_the_store_down_at_release("attempt 2")
    run.lapse()
    third = run.redelivered().execute_intent(run.intent)
    run.check("attempt 3 took over and ended")

    doc = reservation(db, run.intent.tenant_id, run.intent.client_intent_id)
    assert run.flagged() == []
    assert len(run.steps) == 7
    assert (doc["attempt"], doc["outcome"], doc["counted_lease_id"]) == (3, "placed", None)
    assert third.broker_order_id == doc["broker_order_id"]
    assert run.broker.place_calls == 1


def test_a_jumped_sweep_mid_call_then_a_take_over_keeps_the_hold_and_the_record_in_step(
    db: firestore.Client, proxy: CuttableProxy, clients: ExitStack
) -> None:
    run = Sequence(db, proxy, clients)
    run.attempt_with_the_store_down_at_release("attempt 1")
    run.lapse()
    run.broker.inside = [run.jumped_sweep, proxy.cut]

    with pytest.raises(OutcomeUnrecordedError):
        run.redelivered().execute_intent(run.intent)
    run.check("attempt 2's release failed with the store down")
    run.restore()
    run.lapse()
    run.redelivered().execute_intent(run.intent)
    run.check("attempt 3 took over and ended")

    doc = reservation(db, run.intent.tenant_id, run.intent.client_intent_id)
    assert run.flagged() == []
    assert len(run.steps) == 7
    assert (doc["attempt"], doc["outcome"], doc["counted_lease_id"]) == (3, "placed", None)


# -- the jumped sweep's marks ----------------------------------------------------------------


def reserve(db: firestore.Client, clock: FakeClock, intent_id: str) -> None:
    manager = FirestoreReservationManager(db, clock=clock, ttl=TTL, policy=FAST_POLICY)
    request = ReservationRequest(
        tenant_id="jump-co",
        broker_account_id="acct-1",
        client_intent_id=intent_id,
        symbol="AAPL",
        amount_usd=100.0,
        payload_hash="h",
    )
    assert isinstance(manager.acquire(request), Acquired)


def test_a_jumped_sweep_marks_what_it_expired_and_takes_back_what_it_could_not(
    db: firestore.Client,
) -> None:
    clock = FakeClock(system_clock())
    expired, changed = f"jumped-{uuid4().hex}", f"changed-{uuid4().hex}"
    reserve(db, clock, expired)
    reserve(db, clock, changed)
    jumped: set[str] = set()
    store = MarkedExpiries(db, policy=FAST_POLICY, jumped=jumped)
    ahead = clock() + 2 * TTL
    found = {
        lease.client_intent_id: lease
        for lease in store.find_expired(ahead, limit=500, after=None)
        if isinstance(lease, ExpiredLease)
    }
    # Released meanwhile (the sweeper reads a document again after a lost precondition, and
    # expires it only while it still holds the same lapsed lease).
    db.collection("tenants", "jump-co", "execution_reservations").document(changed).update(
        {"status": "released", "outcome": "placed", "released_at": clock()}
    )

    landed = {intent: store.expire(found[intent], ahead) for intent in (expired, changed)}

    assert landed == {expired: True, changed: False}
    assert jumped == {expired}
    assert reservation(db, "jump-co", expired)["status"] == "expired"


def test_a_record_agrees_with_a_closed_unfilled_order_only_as_rejected_with_its_id() -> None:
    order = {"id": "o-1", "status": "canceled", "filled_qty": "0"}
    agrees = {"outcome": "rejected", "broker_order_id": "o-1"}

    assert closed_unfilled_as_recorded(agrees, order)
    assert not closed_unfilled_as_recorded({**agrees, "broker_order_id": None}, order)
    assert not closed_unfilled_as_recorded({**agrees, "outcome": "stale"}, order)
    assert not closed_unfilled_as_recorded(agrees, {**order, "filled_qty": "0.5"})
    assert not closed_unfilled_as_recorded(agrees, {**order, "status": "accepted"})
