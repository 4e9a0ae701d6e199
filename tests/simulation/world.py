"""The simulated world of one schedule: the real service on a simulated store and broker.

`World(seed).run()` builds the service with `execution.bootstrap.bootstrap` (the real engine,
reservation state machine, Firestore adapters, sweeper and reconciler) on a `SimClient` and a
`SimBroker`, with a clock, lease ids, jitter and sleeps of its own, and lets its seeded generator
decide everything else: which actor runs at each point, whether the store call or broker call
there fails (and how), whether the process is paused there (a zombie, resumed later) or killed
(never resumed: its `finally` never runs), clock jumps, Pub/Sub deliveries (first, redelivery after
a retry, duplicate, concurrent duplicate, after an ack), sweeper and reconciler runs, an
operator flipping a kill switch or an account's limits, a publisher rewriting the quote, and each
process's clock offset (its own machine's clock, up to `MAX_CLOCK_OFFSET_SECONDS` off the
world's). Intents buy or sell, at a limit or at market, on one or two accounts per tenant; one
world in five straddles midnight UTC. Each delivery runs in one of `INSTANCES` simulated
instances, whose writers of one account take turns (`turn_waits`): a waiter is parked until the
turn is handed on or its timeout passes in the world's time. Each world draws a scenario
(`_draw_scenario`: `midnight`, `unknown_fates`, `hot`, `zombies` or `ordinary`, the world as it was
before them) and some draws are aimed where rare guards are judged (the `P_...` constants marked
"Aimed" say where), never so as to take a schedule out of reach. `invariants.Invariants`
checks the world after every step; the first violation ends the schedule with `Violation` and its
trace. `README.md` beside this file tables what is explored against the review's classes.

At the end every process still alive is killed, time moves past every lease, and one clean sweep
and one clean reconcile run: the final invariants say what the three layers (the `finally`, the
sweeper, the reconciler) must have achieved by then.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from execution.bootstrap import bootstrap
from execution.errors import ExecutionError, PermanentError, RetryableError
from execution.firestore.account_turns import AccountTurns
from execution.intake import Delivery, parse_intent
from execution.models import ExecutionResult
from execution.settings import Settings
from tests.simulation.invariants import Invariants, Violation, key_of, reservation_path
from tests.simulation.scheduler import Actor, Scheduler
from tests.simulation.sim_broker import SimBroker, SimFault
from tests.simulation.simstore import Fault, SimClient, StoreCall
from tests.simulation.simstore.faults import deadline_exceeded, unavailable
from tests.simulation.turn_waits import InstanceTurns, instance_turns

START = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
MIDNIGHT = datetime(2026, 1, 6, tzinfo=UTC)
P_NEAR_MIDNIGHT = 0.2
NEAR_MIDNIGHT_SECONDS = 2.0
"""One world in five starts up to this long before midnight UTC: its orders land on both sides
of it, so the orders per day are counted on two days, by clocks up to
`MAX_CLOCK_OFFSET_SECONDS` off either way (every process's clock is off there), and its daily
orders are limited (alone, or with every other limit)."""
SETTINGS = Settings(
    project=None,
    function_timeout_seconds=20.0,
    reservation_ttl_seconds=30.0,
    firestore_timeout_seconds=2.0,
    broker_timeout_seconds=2.0,
    intent_max_age_seconds=60.0,
    reservation_max_attempts=3,
    shared_read_max_age_seconds=1.0,
    sweep_deadline_seconds=60.0,
    clock_skew_seconds=5.0,
)
TTL_SECONDS = SETTINGS.reservation_ttl_seconds
INTENT_MAX_AGE = timedelta(seconds=SETTINGS.intent_max_age_seconds)
BROKER_CALL_SECONDS = SETTINGS.broker_timeout_seconds
"""A broker call lasts up to its deadline; the simulation draws its duration below it."""
STALL_SECONDS = 0.6 * SETTINGS.clock_skew_seconds
"""An actor that waited longer than this for the baton was paused. Below the clock skew the
engine leaves on top of the broker's deadline: a broker call not paused itself (a wait under
this, then a call under its deadline) ends inside the lease checked just before it."""
MAX_CLOCK_OFFSET_SECONDS = 0.2 * SETTINGS.clock_skew_seconds
"""How far one process's clock may be from the world's, either way: two processes' clocks differ
by up to twice this. With `STALL_SECONDS` it uses up CLOCK_SKEW_SECONDS, the margin the engine
leaves for both (a wait not counted as a pause, and the other process's clock)."""
MIDNIGHT_PACE = 0.2
"""Aimed: near midnight, time passes this much slower (between steps, inside broker calls) and
clock jumps are rarer: orders land and are recorded within a second or two of midnight, where
processes' clocks disagree on the day (`execution.account_state.counted_days`)."""
P_CLOCK_OFFSET = 0.5
"""The chance that a process's clock is off the world's at all."""

MAX_EVENTS = 400
MAX_DELIVERIES = 6
"""Pub/Sub's dead-letter topic takes a message after this many delivery attempts."""
P_STORE_FAULT = 0.04
P_BROKER_FAULT = 0.12
P_PAUSE = 0.03
P_PAUSE_HOT = 0.12
"""Pauses are likelier where they matter most: at commits and broker calls."""
P_ZOMBIE_LOST_ANSWER = 0.5
"""A zombie's broker call (paused inside it) loses its answer this often: the order lands while a
newer attempt may have recorded the intent ended (`ExecutionEngine._settle_lost_answer`)."""
P_PAST_A_ZOMBIES_LEASE = 8.0
"""The weight of running time to just past the lease of a process paused inside its broker call
(within its pause): a redelivery may then take over before the zombie wakes."""
P_WAKE_OUTLIVED = 30.0
"""The weight of waking a zombie (paused inside its broker call) while the attempt that took
over from it holds a live lease and has asked the broker for the intent's order (before the
zombie's order lands, so it found none): its pause ends at a moment the seed could draw anyway,
aimed where the outlived attempt's settle is PENDING (`ExecutionEngine._settle_or_mark`) and
the newer attempt may record an outcome that forbids the order."""
P_RUN_OUTLIVED = 30.0
"""The weight of running such a zombie once woken: its late order, its fenced release and its
settle (PENDING: the marker) land inside the newer attempt's window, before that one has
recorded its outcome and read the record again for a marker (`ExecutionEngine._answer`)."""
P_WAKE_OUTLIVED_EARLY = 3.0
"""The same wake while the newer attempt has not asked the broker yet (it will find the order)."""
P_PLACE_FAULT = 0.2
PLACE_FAULTS = (
    SimFault.SERVER_ERROR,
    SimFault.TIMEOUT_AFTER_ACCEPT,
    SimFault.TIMEOUT_AFTER_ACCEPT,
    SimFault.GARBAGE_AFTER_ACCEPT,
    SimFault.REFUSED,  # a 4xx for good: outcome `rejected`, its hold ends
)
"""Drawn alike: an answer lost after the broker acted (an order of unknown fate) three times in
five, since it is what the holds, the redelivery's lookup and the reconciler exist for."""
READ_FAULTS = (SimFault.SERVER_ERROR, SimFault.GARBAGE_AFTER_ACCEPT, SimFault.REFUSED)
P_TO_A_CALLERS_EDGE = 0.25
"""Aimed: how often time runs, at the first point of an attempt holding its lease with no order
yet (on its way to the gates and the broker call), to just where its lease has room for the call
only without the clock skew's margin (`_jump_to_the_edge`)."""
P_SWEEP_A_DEAD_HOLD = 3.0
"""Aimed: the weight of a sweep where a dead lease's hold awaits both the sweeper and the
reconciler (`_dead_hold_awaits`), against 0.5 elsewhere: the two then race over one document."""
P_RUN_A_WAITING_SWEEP = 2.0
"""Aimed: the weight of running such a sweep, parked at its expiry's commit, against 20 for the
other ready processes (the reconciler among them, and 60 more for it: see `_choose`)."""
P_RECONCILE_A_DUE_HOLD = 2.0
P_TO_A_DUE_HOLD = 0.5
"""Aimed: the weights of a reconcile where a hold is due the reconciler (its lease's last
broker call can no longer land: `_holds_due`), against 0.4 elsewhere, and of time running to
when the next hold is due, before the intent's redelivery settles it."""
P_PAUSE_A_LINE = 0.5
"""Aimed: a writer carrying its account's line is paused at the line's commit this often, mostly
past its waiters' timeout (`_line_pause`): a carried acquire may then land after its
waiter gave up (seed 1137), a lease nobody uses."""
P_LOOKUP_FAULT_HOT = 0.4
"""Aimed: a delivery's lookup fails this often where the broker holds its intent's order (the
lookup that decides whether a take-over finds it), against `P_BROKER_FAULT` elsewhere."""
P_KILL = 0.02
P_SWITCH = 0.35
"""At a point, the chance that the baton goes back to the scheduler (which picks anew)."""
TENANTS = ("t1", "t2")
ACCOUNT = "acct"
ACCOUNTS = (ACCOUNT, "acct2")
P_TWO_ACCOUNTS = 0.25
"""The chance that a world's tenants each trade on two accounts (limits and turns per account)."""
P_ONE_HOT_ACCOUNT = 0.16
"""Aimed: about one world in six sends three intents of one tenant to one account, so that the
holds, leases and orders of the others weigh on each admission (the position and daily limits'
count of what is in flight or of unknown fate)."""
P_UNKNOWN_FATES = 0.15
"""Aimed: about one world in seven is a hot account (as above) whose intents are fresh, alike in
side and type (one share each, at a limit), never dry runs, under the daily or position limit at
its tightest (or all), with fewer clock jumps and no kill switch, and whose broker loses the
answer to a `place` often (`P_LOST_ANSWER_UNKNOWN_FATES`): holds of unknown fate, released or
lapsed, while the account's other intents are admitted and placed beside them (what the holds
are for: `execution.account_state`)."""
P_LOST_ANSWER_UNKNOWN_FATES = 0.6
P_ZOMBIES = 0.2
"""Aimed: one world in five pauses a process inside its broker call often (`P_PAUSE_IN_PLACE`),
mostly past its lease (`_pause_length`), with intents old enough that the attempt taking over
finds them stale, and pauses that attempt as often at its commits once it has asked the broker
(a slow release): the late order, the take-over's forbidding outcome and the outlived attempt's
settle or marker (`ExecutionEngine._settle_or_mark`, `_answer`) meet in one window."""
P_PAUSE_IN_PLACE = 0.5
P_KILL_ZOMBIES = 0.005
P_STORE_FAULT_ZOMBIES = 0.01
"""There, kills and store faults are rarer: the window needs both attempts to see it through."""
P_SELL = 0.25
P_MARKET = 0.2
"""A market order is valued at the quote (`market_quotes/AAPL`), which may be unusable."""
QUOTES: dict[str, dict[str, Any] | None] = {
    "usable": {"bid": 99.9, "ask": 100.1},
    "wide": {"bid": 95.0, "ask": 105.0},  # routing refuses it (spread over 50 bps)
    "stale": {"bid": 99.9, "ask": 100.1, "age": 120.0},  # older than the router's 60 s
    "crossed": {"bid": 100.1, "ask": 99.9},  # malformed: no quote (a market order waits)
    "garbage": {"bid": "n/a", "ask": 100.1},
    "missing": None,
}
"""What the quote document may hold; the operator (a publisher) rewrites it at any step."""
P_USABLE_QUOTE = 0.7
"""The chance that a world starts with a usable quote (else one of `QUOTES`, drawn alike)."""
INTENT_IDS = ("i1", "i2", "i3")
SWITCH_PATHS = ("ops/execution_kill_switch", "tenants/t1/ops/execution_kill_switch")
LIMIT_CHOICES: dict[str, tuple[float | int | None, ...]] = {
    "max_inflight_usd": (None, 100.0, 150.0, 250.0),
    "max_daily_orders": (None, 1, 2),
    "max_position_qty": (None, 1.0, 2.0, 3.0),
}
"""Each account limit the operator may set (None: unset), against intents of 100-300 USD."""
TERMINAL_RESULTS = ("ack", "dead_letter", "retry", "crash")
TURN_TIMEOUTS = (5.0, 60.0)
"""How long a writer waits for its account's turn (`AccountTurns`), drawn once per world: the
deployed 60 s (a paused holder's waiters wait long, and their intents may turn stale), or 5 s
(the barge-in comes within a lease)."""
INSTANCES = 2
"""Instances alive at once: each delivery runs in one of them, drawn by the seed."""


@dataclass
class Message:
    """One Pub/Sub message and what its deliveries did."""

    message_id: str
    key: tuple[str, str]
    data: bytes
    deliveries: int = 0
    acked: bool = False
    dead_lettered: bool = False
    retry: bool = False
    """Its last delivery asked for a retry (raised), or died without answering."""
    results: list[Any] = field(default_factory=list)


class World:
    """One schedule, decided by `seed`; `run` returns its report or raises `Violation`."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.scenario = self._draw_scenario()
        # With unknown fates, half the worlds leave the holds to the intents' other deliveries
        # (the reconciler's aims would settle them before the account's next admissions).
        self.reconciler_aimed = self.scenario != "unknown_fates" or self.rng.random() < 0.5
        self.near_midnight = self.scenario == "midnight"
        self.pace = MIDNIGHT_PACE if self.near_midnight else 1.0
        """How fast time passes between steps and inside a broker call (1: as elsewhere)."""
        self.start = START
        if self.near_midnight:
            self.start = MIDNIGHT - timedelta(seconds=self.rng.uniform(0.0, NEAR_MIDNIGHT_SECONDS))
        self.now = self.start
        self.step = 0
        self._trace: list[tuple[int, datetime, str]] = []
        self.injected: Counter[str] = Counter()
        self.faults_on = True
        self.scheduler = Scheduler()
        self.actors: list[Actor] = []
        self._ids = 0
        self.lease_owner: dict[str, Actor] = {}
        self.violation: Violation | None = None
        self.ran: Actor | None = None
        """The actor that ran in the current step (the writer of whatever changed)."""
        self.turn_timeout = self.rng.choice(TURN_TIMEOUTS)
        self.instances: dict[int, AccountTurns] = {}
        self.live_instances = list(range(1, INSTANCES + 1))
        self._instance_ids = INSTANCES
        self.db = SimClient(clock=self.raw_clock, faults=self._store_hook, seed=seed)
        self.broker = SimBroker(clock=self.raw_clock, before_call=self._broker_hook)
        self.service = bootstrap(
            SETTINGS,
            clock=self._clock_point,
            db=self.db,  # type: ignore[arg-type]  # the subset of `firestore.Client` we use
            broker=self.broker,
            ids=self._new_id,
            sleep=self._sleep,
            monotonic=self._monotonic,
            uniform=self.rng.uniform,
            turns=InstanceTurns(self),
        )
        self.messages: list[Message] = []
        self.limits: dict[tuple[str, str], list[tuple[int, dict[str, float | int | None]]]] = {}
        self.account_of: dict[tuple[str, str], str] = {}
        """The broker account of each intent (tenant, intent id)."""
        self.born: dict[tuple[str, str], datetime] = {}
        """When each intent was created (its `created_at`)."""
        """Per account, the limits in force from each step on (None: unset)."""
        self.invariants = Invariants(self)

    # -- the outside world's clocks, ids and sleeps ------------------------------------------

    def raw_clock(self) -> datetime:
        """The world's time, with no scheduling point (the store and broker read it mid-call)."""
        return self.now

    def _monotonic(self) -> float:
        # No point here: `RecentReads` reads it under its lock, and a point there would park the
        # lock's holder while another actor waits for it.
        return (self.now - self.start).total_seconds()

    def _clock_point(self) -> datetime:
        actor = self.scheduler.current
        if actor is None:
            return self.now
        self._point(actor, "clock")
        return self.clock_of(actor)

    def clock_of(self, actor: Actor) -> datetime:
        """What `actor`'s clock reads now: the world's time, off by its machine's offset."""
        return self.now + timedelta(seconds=actor.clock_offset)

    def _sleep(self, _seconds: float) -> None:
        actor = self.scheduler.current
        if actor is not None:
            self._point(actor, "sleep")

    def _new_id(self) -> str:
        self._ids += 1
        new_id = f"L{self._ids:04d}"
        actor = self.scheduler.current
        if actor is not None:
            actor.leases.append((new_id, self.step))
            self.lease_owner[new_id] = actor
        return new_id

    # -- points: the store's and the broker's hooks ------------------------------------------

    def _point(self, actor: Actor, label: str, *, hot: bool = False) -> None:
        """A step: check the world, then the seed decides whether `actor` goes on, hands the
        baton back (another actor or a world event runs), is paused or is killed."""
        self._arrive(actor, label)
        if self._edge_aimed and not actor.edge_drawn and self._may_call_the_broker(actor):
            actor.edge_drawn = True  # once per attempt: at its first point holding the lease
            if self.rng.random() < P_TO_A_CALLERS_EDGE:
                self._jump_to_the_edge(actor)
        if self.faults_on:
            roll = self.rng.random()
            pause = P_PAUSE_HOT if hot else P_PAUSE
            zombies = self.scenario == "zombies"
            slowed = zombies and self._took_over_from_a_zombie(actor, label)
            if slowed or (zombies and label == "broker place"):
                pause = P_PAUSE_IN_PLACE
            line = _carries_a_line(label)
            if line:
                pause = P_PAUSE_A_LINE
            kill = P_KILL_ZOMBIES if zombies else P_KILL
            if roll < kill:
                self._kill(actor)
            elif roll < kill + pause:
                actor.state = "paused"
                past_lease = label == "broker place"  # the zombie of issue #11
                # A slowed take-over stays inside its lease (the zombie's settle is PENDING).
                length = (
                    self.rng.uniform(0.5, 2.5)
                    if slowed
                    else self._line_pause()
                    if line
                    else self._pause_length(actor, past_lease=past_lease)
                )
                actor.resume_at = self.now + timedelta(seconds=length)
                self.inject("process.paused", actor)
                self.note(f"{actor.name}: paused until {actor.resume_at.strftime('%M:%S')}")
                self._unanswered(actor)
            elif roll >= kill + pause + self._switch_chance(actor, label):
                return  # it goes on: the same interleaving as a switch back to it at once
        actor.yielded_at = self.now
        self.scheduler.point()
        actor.stalled = self.now - actor.yielded_at > timedelta(seconds=STALL_SECONDS)

    def _arrive(self, actor: Actor, label: str) -> None:
        """A step of `actor`'s: note it and check the world as the step before left it."""
        self.step += 1
        actor.stalled = False
        self.note(f"{actor.name}: {label}")
        actor.last_point = label
        self.ran = actor
        try:
            self.invariants.orders_placed_by(actor)
            self.invariants.after_step()
        except Violation as exc:
            # Raised here it would meet the code under test's `except Exception`: hand it to the
            # scheduler's thread, which ends the schedule (this actor unwinds as abandoned).
            self.violation = exc
            self.scheduler.point()

    def _kill(self, actor: Actor) -> None:
        """`actor`'s invocation dies (its `finally` never runs): a turn it held stays held, and
        the invocations already in its instance wait for it until their timeout (the barge-in).
        The instance takes no new delivery: those go to a fresh one."""
        actor.state = "killed"
        self.inject("process.killed", actor)
        self._unanswered(actor)
        if actor.instance in self.live_instances:
            self._instance_ids += 1
            self.live_instances[self.live_instances.index(actor.instance)] = self._instance_ids

    # -- turns: a writer waits for its account's turn in the world's time ---------------------

    def turns_of_current(self) -> AccountTurns:
        """The account turns of the running actor's instance."""
        actor = self.scheduler.current
        if actor is None:
            raise AssertionError("only an actor takes an account's turn")
        turns = self.instances.get(actor.instance)
        if turns is None:
            turns = self.instances[actor.instance] = instance_turns(self, self.turn_timeout)
        return turns

    def seconds(self) -> float:
        """The world's monotonic clock, in seconds (what a turn's timeout is measured on)."""
        return self._monotonic()

    def park(self, notified: Callable[[], bool], timeout: float | None) -> None:
        """The running actor waits for a turn: blocked until `notified()` or `timeout` seconds
        of the world's time (None: no end); the world wakes it (`_wake_paused`)."""
        actor = self.scheduler.current
        if actor is None:
            raise AssertionError("only an actor waits for an account's turn")
        self._arrive(actor, f"waits for its turn (up to {timeout}s)")
        self.injected["turn.wait"] += 1
        if actor.intent_key is not None and self.invariants.holds_record(actor):
            actor.queued_release_of = actor.lease_id  # its release waits in line
        actor.state = "blocked"
        actor.wakes = notified
        actor.blocked_since = self.now
        actor.resume_at = None if timeout is None else self.now + timedelta(seconds=timeout)
        actor.yielded_at = self.now
        self.scheduler.point()
        actor.wakes = actor.blocked_since = None
        actor.stalled = self.now - actor.yielded_at > timedelta(seconds=STALL_SECONDS)

    def _store_hook(self, call: StoreCall) -> Fault | None:
        actor = self.scheduler.current
        if actor is None:
            return None
        paths = ",".join(p.removeprefix("tenants/") for p in call.paths)
        self._point(actor, f"store {call.kind} {paths}", hot=call.kind == "commit")
        chance = P_STORE_FAULT_ZOMBIES if self.scenario == "zombies" else P_STORE_FAULT
        if not self.faults_on or self.rng.random() >= chance:
            return None
        kinds = ["unavailable"]
        if call.kind == "commit":
            kinds += ["unavailable_after_commit", "deadline_after_commit"]
        kind = self.rng.choice(kinds)
        self.inject(f"store.{kind}", actor)
        if kind == "unavailable":
            return unavailable()
        if kind == "unavailable_after_commit":
            return unavailable(after_commit=True)
        return deadline_exceeded(after_commit=True)

    def _broker_hook(self, operation: str) -> None:
        actor = self.scheduler.current
        if actor is None:
            return
        self._point(actor, f"broker {operation}", hot=True)
        if operation == "lookup":
            actor.asked_broker = True
        if operation == "place":  # the call takes time, inside its deadline
            actor.paused_in_place = actor.stalled
            if actor.at_the_edge:  # a stall before the call (not a pause: under STALL_SECONDS)
                actor.at_the_edge = False
                self._advance(self.rng.uniform(0.0, STALL_SECONDS), f"{actor.name}: stalls")
            self.now += timedelta(seconds=self.rng.uniform(0.0, BROKER_CALL_SECONDS) * self.pace)
        if not self.faults_on:
            return
        lost = self._lost_answer_chance(actor) if operation == "place" else 0.0
        if lost and self.rng.random() < lost:
            fault = self.rng.choice([SimFault.TIMEOUT_AFTER_ACCEPT, SimFault.GARBAGE_AFTER_ACCEPT])
        elif self.rng.random() < self._broker_fault_chance(actor, operation):
            fault = self.rng.choice(PLACE_FAULTS if operation == "place" else READ_FAULTS)
        else:
            return
        self.inject(f"broker.{operation}.{fault.name.lower()}", actor)
        self.broker.inject(operation, fault)

    def _lost_answer_chance(self, actor: Actor) -> float:
        """How likely a `place` that the broker acts on loses its answer, besides the faults all
        calls meet: a zombie's (paused inside it), and any with unknown fates aimed at."""
        if actor.paused_in_place:
            return P_ZOMBIE_LOST_ANSWER
        return P_LOST_ANSWER_UNKNOWN_FATES if self.scenario == "unknown_fates" else 0.0

    def _broker_fault_chance(self, actor: Actor, operation: str) -> float:
        if operation == "place":
            return P_PLACE_FAULT
        if operation == "lookup" and self.invariants.broker_holds_order_of(actor.intent_key):
            return P_LOOKUP_FAULT_HOT
        return P_BROKER_FAULT

    def inject(self, kind: str, actor: Actor | None = None) -> None:
        self.injected[kind] += 1
        if actor is not None and kind.startswith(("store.", "broker.")):
            actor.faults += 1
        self.note(f"{actor.name + ': ' if actor else ''}FAULT {kind}")

    def note(self, line: str) -> None:
        self._trace.append((self.step, self.now, line))

    @property
    def trace(self) -> list[str]:
        """The schedule's steps so far: step number, the world's minute:second, what happened."""
        return [
            f"{step:4d} {now.strftime('%M:%S.%f')[:-3]} {line}" for step, now, line in self._trace
        ]

    @property
    def fingerprint(self) -> int:
        """Equal for two runs that took the same steps (to count distinct schedules)."""
        return hash(tuple(line for _, _, line in self._trace))

    # -- the schedule ------------------------------------------------------------------------

    def run(self) -> World:
        """Play the schedule; raises `Violation` (with the trace) at the first broken invariant."""
        try:
            self._setup()
            for _ in range(MAX_EVENTS):
                self._wake_paused()
                event = self._choose()
                if event is None:
                    break
                self.ran = None
                event()
                self.invariants.after_step()
            self._finish()
        finally:
            self.scheduler.close()
        return self

    def _draw_scenario(self) -> str:
        """The world's shape: `midnight`, `unknown_fates`, `hot`, `zombies` or `ordinary` (the
        aims above)."""
        roll = self.rng.random()
        for scenario, chance in (
            ("midnight", P_NEAR_MIDNIGHT),
            ("unknown_fates", P_UNKNOWN_FATES),
            ("hot", P_ONE_HOT_ACCOUNT),
            ("zombies", P_ZOMBIES),
        ):
            if roll < chance:
                return scenario
            roll -= chance
        return "ordinary"

    def _setup(self) -> None:
        alike = self.scenario == "unknown_fates"
        # Where an aim needs orders placed: no dry run, a usable quote.
        placing = self.scenario if self.scenario in ("unknown_fates", "zombies") else None
        one_side = self._side()
        contents = {
            i: (
                1.0 if alike else self.rng.choice([1.0, 2.0]),
                100.0,
                one_side if alike else self._side(),
                "limit" if alike else self._order_type(),
            )
            for i in INTENT_IDS
        }
        accounts = ACCOUNTS if self.rng.random() < P_TWO_ACCOUNTS else (ACCOUNT,)
        keys = [(t, i) for t in TENANTS for i in INTENT_IDS]
        count = self.rng.randint(2, 3)
        if self.near_midnight:  # every intent on one account: its daily count straddles the day
            accounts, keys, count = (ACCOUNT,), [("t1", i) for i in INTENT_IDS], 3
        hot = self.scenario in ("hot", "unknown_fates")
        if hot:  # aimed: every intent contends for the limits that count holds
            accounts, keys, count = (ACCOUNT,), [("t2", i) for i in INTENT_IDS], 3
        for n, key in enumerate(self.rng.sample(keys, count), start=1):
            qty, price, side, order_type = contents[key[1]]
            if self.rng.random() < 0.2:  # twins across tenants differ now and then
                qty += 1.0
            account = self.rng.choice(accounts)
            self.account_of[key] = account
            self.born[key] = self.start - timedelta(seconds=self.rng.uniform(*self._born_before()))
            intent = {
                "tenant_id": key[0],
                "broker_account_id": account,
                "client_intent_id": key[1],
                "symbol": "AAPL",
                "side": side,
                "qty": qty,
                "order_type": order_type,
                "limit_price": price if order_type == "limit" else None,
                # Born up to a little less than INTENT_MAX_AGE_SECONDS ago: some turn stale mid-run.
                "created_at": self.born[key].isoformat(),
                "dry_run": placing is None and self.rng.random() < 0.1,
            }
            self.messages.append(Message(f"m{n}", key, json.dumps(intent).encode()))
        for tenant in TENANTS:
            for account in accounts:
                # One limit alone (or all, or none): a limit is exercised most where no other one
                # makes its intents wait first.
                chosen = self.rng.choice(
                    ["max_daily_orders", "all"]
                    if self.near_midnight
                    else ["max_daily_orders", "max_position_qty", "all"]
                    if hot
                    else [*sorted(LIMIT_CHOICES), "max_position_qty", "all", "none"]
                )
                self._set_limits(
                    tenant,
                    account,
                    {
                        name: self._limit_value(name, values) if chosen in (name, "all") else None
                        for name, values in LIMIT_CHOICES.items()
                    },
                )
        usable = placing is not None or self.rng.random() < P_USABLE_QUOTE
        self._publish_quote("usable" if usable else self.rng.choice(sorted(QUOTES)))

    def _born_before(self) -> tuple[float, float]:
        """How long before the start intents are born (seconds, a range): fresh where they are
        to be placed, old where a take-over is to find them stale."""
        if self.scenario == "unknown_fates":
            return 0.0, 5.0
        if self.scenario == "zombies":
            return 35.0, 55.0
        return 0.0, 55.0

    def _limit_value(self, name: str, values: tuple[float | int | None, ...]) -> float | int | None:
        """A limit's value; with unknown fates, orders and position at their tightest: any second
        order of the account's (one share each) passes the limit unless a hold counts."""
        if self.scenario == "unknown_fates" and name != "max_inflight_usd":
            return values[1]
        return self.rng.choice(values[1:])

    def _side(self) -> str:
        return "sell" if self.rng.random() < P_SELL else "buy"

    def _order_type(self) -> str:
        return "market" if self.rng.random() < P_MARKET else "limit"

    def _set_limits(self, tenant: str, account: str, limits: dict[str, float | int | None]) -> None:
        self.db.document(f"tenants/{tenant}/accounts/{account}").set(
            {name: value for name, value in limits.items() if value is not None}
        )
        self.limits.setdefault((tenant, account), []).append((self.step, dict(limits)))

    def _publish_quote(self, kind: str) -> None:
        """The quote publisher writes `market_quotes/AAPL` as `kind` (`QUOTES`), stamped now."""
        shape = QUOTES[kind]
        if shape is None:
            self.db.document("market_quotes/AAPL").delete()
            return
        age = timedelta(seconds=float(shape.get("age", 0.0)))
        quote = {k: v for k, v in shape.items() if k != "age"}
        self.db.document("market_quotes/AAPL").set({**quote, "ts": self.now - age})

    def _choose(self) -> Callable[[], object] | None:
        """The next event, weighted; None when nothing but optional events is left."""
        ready = [a for a in self.actors if a.state == "ready"]
        paused = [a for a in self.actors if a.state in ("paused", "blocked") and a.resume_at]
        fresh = [m for m in self.messages if m.deliveries == 0]
        running = {a.message_id for a in self.actors if a.state == "ready"}
        retried = [
            m
            for m in self.messages
            if m.retry
            and not m.acked
            and m.message_id not in running
            and m.deliveries < MAX_DELIVERIES
        ]
        duplicable = [m for m in self.messages if 0 < m.deliveries < MAX_DELIVERIES]
        if not (ready or paused or fresh or retried):
            return None
        options: list[tuple[float, Callable[[], object]]] = []
        # Aimed: a sweep holding a dead hold's lease for its expiry waits (seed 512's window).
        waiting = [a for a in ready if a.kind == "sweep" and self._sweep_meets_a_dead_hold(a)]
        going = [a for a in ready if a not in waiting]
        if going:
            options.append((20.0, lambda: self._run_actor(self.rng.choice(going))))
        if waiting:
            options.append((P_RUN_A_WAITING_SWEEP, lambda: self._run_actor(waiting[0])))
        if fresh:
            options.append((6.0, lambda: self._deliver(self.rng.choice(fresh), "first")))
        if retried:
            options.append((4.0, lambda: self._deliver(self.rng.choice(retried), "redelivery")))
        if duplicable:
            options.append((1.0, lambda: self._deliver(self.rng.choice(duplicable), "duplicate")))
        passes = lambda: self._advance(self.rng.uniform(0.1, 2.0) * self.pace, "time passes")  # noqa: E731
        options.append((2.0, passes))
        # With unknown fates aimed at, intents are to be placed: fewer of them turn stale.
        jumps = {"unknown_fates": 0.2, "midnight": 0.1, "zombies": 0.1}.get(self.scenario, 0.7)
        options.append((jumps, lambda: self._advance(self.rng.uniform(10.0, 40.0), "CLOCK JUMP")))
        options.append((0.7, self._jump_to_a_lease_end))
        if not any(a.kind == "sweep" and a.alive for a in self.actors):
            sweep = lambda: self._spawn("sweep", "sweep", self._sweep)  # noqa: E731
            options.append((0.5, sweep))
            if self._dead_hold_awaits():
                options.append((P_SWEEP_A_DEAD_HOLD, sweep))
        reconciling = [a for a in self.actors if a.kind == "reconcile" and a.alive]
        due = self._holds_due() if self.reconciler_aimed else []
        if not reconciling:
            reconcile = lambda: self._spawn("reconcile", "reconcile", self._reconcile)  # noqa: E731
            options.append((0.4, reconcile))
            if any(moment <= self.now for moment in due):
                options.append((P_RECONCILE_A_DUE_HOLD, reconcile))
        later = [moment for moment in due if moment > self.now]
        if later:
            to = min(later) + timedelta(seconds=self.rng.uniform(0.0, 2.0))
            options.append((P_TO_A_DUE_HOLD, lambda: self._advance_to(to)))
        if self._sweep_between_query_and_expiry():
            # Aimed: the reconciler ends a hold between a sweep's query and its expiry (seed 512).
            if not reconciling:
                spawn = lambda: self._spawn("reconcile", "reconcile", self._reconcile)  # noqa: E731
                options.append((4.0, spawn))
            ready_reconciles = [a for a in reconciling if a.state == "ready"]
            if ready_reconciles:
                options.append((60.0, lambda: self._run_actor(ready_reconciles[0])))
        if self.scenario != "unknown_fates":  # there, intents are to be placed
            options.append((0.25, self._flip_switch))
        options.append((0.25, self._flip_limit))
        options.append((0.25, self._flip_quote))
        if paused and not going:
            wake = min(a.resume_at for a in paused if a.resume_at is not None)
            options.append((6.0, lambda: self._advance_to(wake)))
        options += self._zombie_options(paused, retried, ready)

        total = sum(weight for weight, _ in options)
        pick = self.rng.uniform(0.0, total)
        for weight, event in options:
            pick -= weight
            if pick <= 0:
                return event
        return options[-1][1]

    def _zombie_options(
        self, paused: list[Actor], retried: list[Message], ready: list[Actor]
    ) -> list[tuple[float, Callable[[], object]]]:
        """Aimed at a process paused inside its broker call: time runs past its lease, its
        message is redelivered (a take-over), it wakes while the newer attempt holds on (once
        that one has asked the broker, likelier), and, awake, runs ahead of it."""
        options: list[tuple[float, Callable[[], object]]] = []
        zombies = [a for a in paused if a.state == "paused" and a.last_point == "broker place"]
        lapsing = [a for a in zombies if self._lapses_while_paused(a)]
        if lapsing:
            options.append((P_PAST_A_ZOMBIES_LEASE, lambda: self._past_a_zombies_lease(lapsing[0])))
        outlived = [a for a in zombies if self.invariants.held_by_newer(a)]
        lapsed = {a.message_id for a in self._lapsed(zombies)}
        taken = [m for m in retried if m.message_id in lapsed]
        if taken:
            options.append((P_PAST_A_ZOMBIES_LEASE, lambda: self._deliver(taken[0], "redelivery")))
        awake = [a for a in ready if a.woke_outlived]
        if awake:
            options.append((P_RUN_OUTLIVED, lambda: self._run_actor(awake[0])))
        asked = [a for a in outlived if self._newer_asked_broker(a)]
        if asked:
            options.append((P_WAKE_OUTLIVED, lambda: self._wake_outlived(asked[0])))
        elif outlived:
            options.append((P_WAKE_OUTLIVED_EARLY, lambda: self._wake_outlived(outlived[0])))
        return options

    # -- events ------------------------------------------------------------------------------

    def _run_actor(self, actor: Actor) -> None:
        if not actor.started:
            actor.first_step = self.step
            self.note(f"{actor.name}: starts")
        self.ran = actor
        self.scheduler.run(actor)
        if self.violation is not None:
            raise self.violation
        self.invariants.orders_placed_by(actor)
        if actor.state == "done":
            self._ended(actor)

    def _pause_length(self, actor: Actor, *, past_lease: bool = False) -> float:
        """Short, or aimed at the lease's end (just before, or past it): the lease it holds, or
        the one it may be about to commit. `past_lease` makes the last shape likelier (a pause
        inside the broker call that outlives the lease: a newer attempt may take over)."""
        expires = self.invariants.lease_expiry(actor)
        if expires is None and actor.kind == "delivery":
            expires = self.now + timedelta(seconds=TTL_SECONDS)
        # Past the lease two times in three where `past_lease`, else three in ten.
        shape = 1.0 - self.rng.random() ** 3 if past_lease else self.rng.random()
        if expires is None or shape < 0.4:
            return self.rng.uniform(0.5, 45.0 if expires is None else 2.5)
        left = (expires - self.now).total_seconds()
        if shape < 0.7:
            return max(0.1, left - self.rng.uniform(0.0, 4.0))
        return max(0.1, left + self.rng.uniform(0.0, 30.0))

    def _lapses_while_paused(self, actor: Actor) -> bool:
        """Whether `actor`'s lease ends before its pause does (a redelivery may take over)."""
        expires = self.invariants.lease_expiry(actor)
        return expires is not None and actor.resume_at is not None and expires < actor.resume_at

    def _lapsed(self, zombies: list[Actor]) -> list[Actor]:
        """Those of `zombies` whose lease has lapsed by every clock (a take-over may come)."""
        late = self.now - timedelta(seconds=2 * MAX_CLOCK_OFFSET_SECONDS)
        return [a for a in zombies if self.invariants.lease_lapsed_by(a, late)]

    def _past_a_zombies_lease(self, actor: Actor) -> None:
        """Aimed: time runs to just past the lease of a process paused inside its broker call
        (by every clock, within its pause), where a redelivery may take over before it wakes."""
        expires = self.invariants.lease_expiry(actor)
        if expires is None or actor.resume_at is None:
            return
        target = expires + timedelta(seconds=self.rng.uniform(2 * MAX_CLOCK_OFFSET_SECONDS, 4.0))
        self._advance_to(min(target, actor.resume_at))
        self.injected["clock.past_a_zombies_lease"] += 1

    def _may_call_the_broker(self, actor: Actor) -> bool:
        """Whether `actor` holds a live lease, with more left than the lease-room check asks, for
        an intent not stale yet, with no order at the broker."""
        expires = self.invariants.lease_expiry(actor)
        margin = timedelta(seconds=BROKER_CALL_SECONDS + SETTINGS.clock_skew_seconds)
        return (
            expires is not None
            and expires - self.now > margin
            and actor.intent_key is not None
            and self.clock_of(actor) - self.born[actor.intent_key] < INTENT_MAX_AGE
            and not self.invariants.broker_holds_order_of(actor.intent_key)
        )

    def _jump_to_the_edge(self, actor: Actor) -> None:
        """Aimed: time runs to where `actor`'s lease has room for its broker call only without
        the clock skew's margin (by its own clock, more than the call's deadline left, by less
        than a stall), and its call will stall before it reaches the broker (under
        `STALL_SECONDS`: not a pause): the stall and the call may outlast the lease."""
        expires = self.invariants.lease_expiry(actor)
        if expires is None:
            return
        # By its own clock, more than the call's deadline left, by less than a stall.
        before = BROKER_CALL_SECONDS + actor.clock_offset + self.rng.uniform(0.0, STALL_SECONDS)
        self._advance_to(expires - timedelta(seconds=before))
        self.injected["clock.to_a_callers_edge"] += 1
        actor.at_the_edge = True

    def _took_over_from_a_zombie(self, actor: Actor, label: str) -> bool:
        """Whether `actor`, about to commit, asked the broker for an intent whose earlier
        attempt was paused inside its broker call and lives on (its order may land after that
        answer, and its settle may come before this commit)."""
        return (
            label.startswith("store commit")
            and actor.asked_broker
            and any(
                a.alive and (a.woke_outlived or a.last_point == "broker place")
                for a in self.actors
                if a.intent_key == actor.intent_key and a is not actor
            )
        )

    def _newer_asked_broker(self, actor: Actor) -> bool:
        """Whether the attempt holding `actor`'s intent now has looked its order up already."""
        assert actor.intent_key is not None
        doc = self.db.peek(reservation_path(actor.intent_key)) or {}
        holder = self.lease_owner.get(doc.get("lease_id", ""))
        return holder is not None and holder.asked_broker

    def _wake_outlived(self, actor: Actor) -> None:
        """Aimed: a zombie's pause ends while the attempt that took over holds its lease (the
        PENDING settle: the outlived attempt must mark the record)."""
        actor.state = "ready"
        actor.woke_outlived = True
        self.injected["process.zombie_wakes"] += 1
        self.note(f"{actor.name}: resumes while a newer attempt holds its intent")

    def _wake_paused(self) -> None:
        for actor in self.actors:
            if actor.state == "paused" and actor.resume_at and actor.resume_at <= self.now:
                actor.state = "ready"
                self.note(f"{actor.name}: resumes")
            elif actor.state == "blocked" and actor.wakes is not None and actor.wakes():
                actor.state = "ready"
                self.note(f"{actor.name}: its turn came")
            elif actor.state == "blocked" and actor.resume_at and actor.resume_at <= self.now:
                actor.state = "ready"
                self.injected["turn.timeout"] += 1
                self.note(f"{actor.name}: stops waiting for its turn (timeout)")

    def _advance(self, seconds: float, why: str) -> None:
        self.now += timedelta(seconds=seconds)
        self.note(f"{why} +{seconds:.1f}s")
        if why.startswith("CLOCK JUMP"):
            self.injected["clock.jump"] += 1

    @property
    def _edge_aimed(self) -> bool:
        """Whether time may run to a caller's lease edge: not with unknown fates, whose aim is
        an order placed (not a call refused for want of lease)."""
        return self.faults_on and self.scenario != "unknown_fates"

    def _line_pause(self) -> float:
        """A carrier's pause at its line's commit: past its waiters' two waits (for the line's
        answer, then for the turn) two times in three, so they give up and go ahead alone (where
        one wrote nothing, the late commit lands its lease or its release: seed 7678)."""
        if self.rng.random() < 1 / 3:
            return self.rng.uniform(0.5, 2.5)
        return 2 * self.turn_timeout + self.rng.uniform(0.1, 3.0)

    def _switch_chance(self, actor: Actor, label: str) -> float:
        """`P_SWITCH`, but a sweep about to expire a lease whose hold the reconciler may end
        always hands the baton back there (the reconciler may come between: seed 512)."""
        return 1.0 if self._sweep_meets_a_dead_hold(actor, label) else P_SWITCH

    def _sweep_meets_a_dead_hold(self, actor: Actor, label: str | None = None) -> bool:
        """Whether `actor` is a sweep at (`label`: about to reach) an expiry's commit while a
        dead lease's hold awaits the reconciler (`_dead_hold_awaits`)."""
        point = actor.last_point if label is None else label
        at_commit = actor.kind == "sweep" and point.startswith("store commit")
        return at_commit and self._dead_hold_awaits()

    def _holds_due(self) -> list[datetime]:
        """When each hold a record names (`counted_lease_id`: its order's fate unknown, or its
        lease not ended) becomes the reconciler's: past the last broker call its lease allowed,
        by every clock."""
        margin = SETTINGS.broker_call_seconds + SETTINGS.clock_skew_seconds
        after = timedelta(seconds=margin + 2 * MAX_CLOCK_OFFSET_SECONDS)
        return [
            doc["expires_at"] + after
            for doc in self.db.view("execution_reservations").values()
            if doc.get("counted_lease_id")
        ]

    def _dead_hold_awaits(self) -> bool:
        """Whether a `reserved` document holds a hold (`counted_lease_id`) of a lease lapsed past
        the last broker call it allowed, by every clock, with no order at the broker: both the
        sweeper (to expire it) and the reconciler (to end its hold) are due."""
        margin = SETTINGS.broker_call_seconds + SETTINGS.clock_skew_seconds
        late = self.now - timedelta(seconds=margin + 2 * MAX_CLOCK_OFFSET_SECONDS)
        return any(
            doc["status"] == "reserved"
            and doc.get("counted_lease_id")
            and doc["expires_at"] < late
            and not self.invariants.broker_holds_order_of(key_of(path))
            for path, doc in self.db.view("execution_reservations").items()
        )

    def _sweep_between_query_and_expiry(self) -> bool:
        """Whether a sweep has its query's answer and waits to commit an expiry (a point comes
        before its call: parked at a commit, the sweep has not written yet)."""
        return any(
            a.kind == "sweep" and a.alive and a.last_point.startswith("store commit")
            for a in self.actors
        )

    def _jump_to_a_lease_end(self) -> None:
        """Time runs to just before a live lease ends: whoever holds it must not trust it now.
        Half the time it lands where only the lease-room check's clock-skew margin stops a broker
        call (more than the call's deadline, less than that plus CLOCK_SKEW_SECONDS, left)."""
        ends = sorted(e for e in self.invariants.lease_ends() if e > self.now)
        if ends:
            before = (
                self.rng.uniform(0.0, 4.0)
                if self.rng.random() < 0.5
                else self.rng.uniform(
                    BROKER_CALL_SECONDS, BROKER_CALL_SECONDS + SETTINGS.clock_skew_seconds
                )
            )
            target = self.rng.choice(ends) - timedelta(seconds=before)
            if target > self.now:
                self._advance((target - self.now).total_seconds(), "CLOCK JUMP to a lease's end")

    def _advance_to(self, moment: datetime | None) -> None:
        if moment is not None and moment > self.now:
            self._advance((moment - self.now).total_seconds(), "time passes")

    def _spawn(self, kind: str, name: str, body: Callable[[], Any], **fields: Any) -> Actor:
        count = sum(1 for a in self.actors if a.kind == kind) + 1
        offset = self._clock_offset() if self.faults_on else 0.0
        if kind == "delivery":
            instance = self.rng.choice(self._instances_for(fields.get("intent_key")))
        else:  # a sweep or reconcile runs in a job of its own
            self._instance_ids += 1
            instance = self._instance_ids
        actor = Actor(
            name=f"{name}#{count}",
            kind=kind,
            body=body,
            clock_offset=offset,
            instance=instance,
            **fields,
        )
        self.actors.append(actor)
        self.scheduler.spawn(actor)
        if offset:
            self.note(f"{actor.name}: its clock is {offset:+.2f}s off")
        if kind != "delivery":
            self.injected[kind] += 1
            self.note(f"{actor.name}: scheduled")
        return actor

    def _clock_offset(self) -> float:
        """A process's clock offset: none, either bound, or in between."""
        if self.rng.random() >= (1.0 if self.near_midnight else P_CLOCK_OFFSET):
            return 0.0  # near midnight, every clock is off: the day is a matter of whose clock
        self.injected["clock.skew"] += 1
        shape = self.rng.choice([-1.0, 1.0, self.rng.uniform(-1.0, 1.0)])
        return shape * MAX_CLOCK_OFFSET_SECONDS

    def _instances_for(self, key: tuple[str, str] | None) -> list[int]:
        """The instances a delivery of intent `key` may run in: any live one, but with zombies
        aimed at, not that of an attempt paused inside its broker call (Pub/Sub redelivers to
        any instance; in the zombie's own, the account's turn would order the two releases)."""
        if self.scenario != "zombies":
            return self.live_instances
        zombies = {
            a.instance
            for a in self.actors
            if a.intent_key == key and a.alive and a.last_point == "broker place"
        }
        return [i for i in self.live_instances if i not in zombies] or self.live_instances

    def _deliver(self, message: Message, why: str) -> None:
        message.deliveries += 1
        message.retry = False
        if why == "duplicate":
            live = any(a.message_id == message.message_id and a.alive for a in self.actors)
            why = "after_ack" if message.acked else "concurrent" if live else "duplicate"
            self.injected[f"pubsub.{why}"] += 1
        tenant, intent_id = message.key
        actor = self._spawn(
            "delivery",
            f"{message.message_id}({tenant}/{intent_id})d{message.deliveries}",
            lambda: self._execute(message),
            message_id=message.message_id,
            intent_key=message.key,
        )
        self.note(f"{actor.name}: delivered ({why}) to instance {actor.instance}")

    def _execute(self, message: Message) -> tuple[str, Any]:
        """What `main.execute_intent` does with a delivery: ack, dead-letter and ack, or retry.

        Mirrored rather than called: `main` builds its service from the environment, once per
        instance, and the simulation's service must be this world's.
        """
        delivery = Delivery(message.message_id, self.start, message.data, {})
        try:
            intent = parse_intent(delivery.data)
            result = self.service.engine.execute_intent(intent, published_at=self.start)
        except RetryableError as exc:
            return "retry", exc
        except PermanentError as exc:
            try:
                self.service.dead_letters.record(delivery, f"{type(exc).__name__}: {exc}")
            except RetryableError as outage:
                return "retry", outage
            return "dead_letter", exc
        return "ack", result

    def _sweep(self) -> Any:
        started = self._clock_now()
        expired = self.invariants.lapsed_leases(started)
        return started, expired, self.service.sweeper.sweep()

    def _reconcile(self) -> Any:
        return self._clock_now(), self.service.reconciler.reconcile()

    def _clock_now(self) -> datetime:
        """The running actor's clock, read without a point (what the world notes of it)."""
        actor = self.scheduler.current
        return self.now if actor is None else self.clock_of(actor)

    def _flip_switch(self) -> None:
        path = self.rng.choice(SWITCH_PATHS)
        enabled = self.rng.random() < 0.5
        self.db.document(path).set({"enabled": enabled})
        self.injected["operator.kill_switch"] += 1
        self.note(f"OPERATOR {path} enabled={enabled}")

    def _flip_limit(self) -> None:
        tenant, account = self.rng.choice(sorted(self.limits))
        name = self.rng.choice(sorted(LIMIT_CHOICES))
        value = self.rng.choice(LIMIT_CHOICES[name])
        self._set_limits(tenant, account, {**self.limits[(tenant, account)][-1][1], name: value})
        self.injected["operator.limit"] += 1
        self.note(f"OPERATOR {tenant}/{account} {name}={value}")

    def _flip_quote(self) -> None:
        kind = self.rng.choice(sorted(QUOTES))
        self._publish_quote(kind)
        self.injected["operator.quote"] += 1
        self.note(f"OPERATOR market_quotes/AAPL {kind}")

    # -- endings -----------------------------------------------------------------------------

    def _ended(self, actor: Actor) -> None:
        if isinstance(actor.error, Violation):
            raise actor.error
        if isinstance(actor.error, ExecutionError) and actor.kind != "delivery":
            self.note(f"{actor.name}: failed {type(actor.error).__name__}: {actor.error}")
            return
        if actor.error is not None:
            self.note(f"{actor.name}: CRASHED {type(actor.error).__name__}: {actor.error}")
            raise Violation(
                f"{actor.name} ended with an unexpected {type(actor.error).__name__}: {actor.error}"
            )
        if actor.kind == "delivery":
            self._delivery_ended(actor)
            self.invariants.at_end(actor)
        elif actor.kind == "sweep":
            started, lapsed, report = actor.result
            self.note(f"{actor.name}: done {report.as_dict()}")
            self.invariants.after_sweep(started, lapsed, report)
        else:
            _, report = actor.result
            self.note(f"{actor.name}: done {_short_report(report.as_dict())}")

    def _delivery_ended(self, actor: Actor) -> None:
        message = next(m for m in self.messages if m.message_id == actor.message_id)
        answer, value = actor.result
        message.results.append(answer)
        if answer == "retry":
            message.retry = True
            self.note(f"{actor.name}: retry ({type(value).__name__}: {str(value)[:90]})")
            return
        message.acked = True
        if answer == "dead_letter":
            message.dead_lettered = True
            self.note(f"{actor.name}: dead-lettered ({type(value).__name__}: {str(value)[:90]})")
            return
        assert isinstance(value, ExecutionResult)
        self.note(
            f"{actor.name}: acked {value.outcome.value}"
            f"{'/' + value.recorded_outcome.value if value.recorded_outcome else ''}"
            f" order={value.broker_order_id} ({(value.reason or '')[:60]})"
        )
        self.invariants.at_ack(actor, message, value)

    def _unanswered(self, actor: Actor) -> None:
        """A killed or paused delivery does not answer: past its ack deadline, Pub/Sub delivers
        the message again (a paused one may still answer later: a zombie)."""
        if actor.kind == "delivery":
            message = next(m for m in self.messages if m.message_id == actor.message_id)
            message.retry = not message.acked  # no answer: Pub/Sub delivers it again

    def _finish(self) -> None:
        """Kill what is left, let every lease lapse, sweep and reconcile once, cleanly."""
        self._outwait_turns()
        for actor in self.actors:
            if actor.alive:
                actor.state = "killed"
                self.note(f"{actor.name}: killed at the end")
        self.invariants.after_step()
        self.faults_on = False
        # Past every lease (by every clock) and the last broker call it allowed: the reconciler
        # settles every hold.
        last_call = SETTINGS.broker_call_seconds + SETTINGS.clock_skew_seconds
        self._advance(TTL_SECONDS + last_call + 2 * MAX_CLOCK_OFFSET_SECONDS + 1.0, "time passes")
        for kind, body in (("sweep", self._sweep), ("reconcile", self._reconcile)):
            actor = self._spawn(kind, f"final-{kind}", body)
            while actor.state != "done":
                self._run_actor(actor)
                self.invariants.after_step()
        self.invariants.final()

    def _outwait_turns(self) -> None:
        """Time runs past the turns' timeout: a writer still waiting for a turn then is one that
        would wait for ever (`Invariants.turn_waits`)."""
        since = [a.blocked_since for a in self.actors if a.state == "blocked" and a.blocked_since]
        if since:
            self._advance_to(max(since) + timedelta(seconds=self.turn_timeout + 0.1))
            self._wake_paused()
            self.invariants.after_step()


def _carries_a_line(label: str) -> bool:
    """Whether the point is a commit of several reservations: a writer carrying its account's
    line (`FirestoreReservationManager.carry_line`)."""
    return label.startswith("store commit") and label.count("execution_reservations/") > 1


def _short_report(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if v not in (0, [], None, True) and k != "since"}
