"""The chaos rig: real processes wired as in production, and the hands that break them.

Wiring: the Pub/Sub emulator pushes (no retry policy: a failed push comes back about every second)
to two `main.execute_intent` functions-framework processes (`S1`, `S2`; one topic reaches both at
once, two reach one each), with `BROKER=alpaca` against the loopback `AlpacaSandbox`, whose order
book is the ground truth for orders. A `main.sweep_reservations` process runs the final sweep.

Firestore is an emulator this rig owns, behind a `CuttableProxy`: the functions and the sweeps
reach it only through the proxy (the monitor and the final checks read it directly). A Firestore
outage is "emulator stopped and restarted" for real, without the data loss a restart of an
in-memory emulator would otherwise bring (which would break every invariant trivially): cut the
proxy (open connections reset, new ones refused: what an outage looks like to a client), wait for
requests already inside the emulator to finish, export its data through the emulator's own export
endpoint, SIGKILL it, start a new one on the same port importing that export, and restore the
proxy when the planned outage is over. Writes acknowledged before the cut are in the export; a
write whose answer the cut swallowed may or may not be, as in a real outage. The import resets
every document's update time, which the product's update-time preconditions must survive. The
outage is staged mid-call (orders at the broker answer once the store is gone) and lasts longer
than a ledger write plus a release, each bounded by `FIRESTORE_TIMEOUT_SECONDS`. After the proxy
is restored, gRPC's reconnect backoff delays the first successful call by a second or more; a probe
client measures it for the report.

A killed function is a SIGKILL of the whole functions-framework process group while broker calls
hang (`hang_after_accept`), then a cold start on the same port. A clock jump is a sweep whose clock
reads a TTL or more ahead: every live lease looks lapsed to it, so it expires leases whose
invocations are still running, and their redeliveries take over. That is exactly what a jumped
clock does to the lease protocol (the functions read the system clock, which a test cannot move
for another process), and it is what the `lease_id` fence exists for: the live invocation's late
release must not clobber the take-over.

A zombie storm pauses a function process for real (SIGSTOP of its process group) at a planned
point of one intent's broker call, past that intent's lease, while the other process takes the
intent over: right before the call and right after the answer, by a plan the process reads
(`pause_hook/sitecustomize.py`), or inside it, while the sandbox holds the accepted order's answer
(the rig sends SIGSTOP). Meanwhile the intent may turn stale, or a kill switch (global, tenant, or
the account's trading mode) turns on until the take-over has ended the intent; then SIGCONT. At
the end `main.reconcile_orders` runs once, as Cloud Scheduler runs it, before the final checks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for_futures
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from google.cloud import firestore
from google.cloud.pubsub_v1 import PublisherClient, SubscriberClient

from devtools import alpaca_sandbox
from devtools.alpaca_sandbox import AlpacaSandbox, Fault
from devtools.emulators import FIRESTORE, Emulator
from devtools.functions_server import FunctionsServer
from execution.client_order_ids import client_order_id_for
from execution.clock import system_clock
from execution.firestore.support import CallPolicy
from execution.firestore.sweeper_store import FirestoreExpiredLeases
from execution.sweeper import ExpiredLease, Sweeper
from tests.chaos.store_lives import StoreLives
from tests.chaos.workload import (
    BURST_SIZE,
    QUOTE,
    STALE_MARGIN,
    STORM_SPAN,
    SYMBOLS,
    TOPIC_BOTH,
    TOPIC_S1,
    TOPIC_S2,
    Kill,
    Message,
    Outage,
    Plan,
    ZombieStorm,
    burst_topic,
    payload_hash,
)
from tests.support.builders import client_at
from tests.support.tcp_proxy import CuttableProxy
from tests.support.waiting import wait_until

SWEEP_POLICY = CallPolicy(timeout_seconds=2.0)
PAUSE_HOOK = Path(__file__).resolve().parent / "pause_hook"
BURST_CALL = 1.0
"""How long the broker takes to answer a limit burst's orders (well inside its deadline)."""
REACH_SECONDS = 45.0
"""How long a storm waits for its first attempt to reach the pause point (a busy machine, a
broker fault and its redelivery on the way) before it gives up on that storm."""


def pending_faults(sandbox: AlpacaSandbox, method: str) -> int:
    """Faults queued on the sandbox for `method` and not used yet."""
    return len(sandbox.queued(method))


def in_threads(actions: list[Callable[[], object]]) -> None:
    """Run `actions` at once, each in its own thread; re-raise the first failure."""
    errors: list[BaseException] = []

    def run(action: Callable[[], object]) -> None:
        try:
            action()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(action,)) for action in actions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def still_queued(sandbox: AlpacaSandbox, method: str, faults: tuple[Fault, ...]) -> int:
    """How many of these very fault objects the sandbox has not used yet."""
    return sum(1 for queued in sandbox.queued(method) if any(queued is f for f in faults))


class OwnedFirestore:
    """A Firestore emulator on a fixed loopback port that this rig can stop and restart."""

    def __init__(self, log_dir: Path) -> None:
        self._emulator = Emulator(FIRESTORE, log_dir)
        self.host = self._emulator.host
        self._exports = log_dir / "exports"
        self._starts = 0
        self.lives = StoreLives()
        """Which `read_time` snapshots show a whole database (see `store_lives`)."""

    def start(self, import_metadata: Path | None = None) -> float:
        """Start it (optionally importing an export); seconds until it answered."""
        self._starts += 1
        if import_metadata is None:
            return self._emulator.start()
        return self._emulator.start(f"--import-data={import_metadata}")

    def stop(self) -> None:
        self._emulator.stop()

    def export(self, project: str) -> Path:
        """Export `project` through the emulator's endpoint; the metadata file to import."""
        self._exports.mkdir(parents=True, exist_ok=True)
        target = self._exports / f"export-{self._starts}"
        target.mkdir()
        body = json.dumps(
            {
                "database": f"projects/{project}/databases/(default)",
                "export_directory": str(target),
            }
        ).encode()
        request = urllib.request.Request(
            f"http://{self.host}/emulator/v1/projects/{project}:export",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30):
            pass
        return next(target.rglob("*.overall_export_metadata"))

    def restart_keeping_data(self, project: str) -> tuple[float, float]:
        """Export, SIGKILL, start again on the same port with the export and let it import:
        (export s, start and import s)."""
        began = time.monotonic()
        metadata = self.export(project)
        exported = time.monotonic() - began
        self.lives.restart_begins()
        self.stop()
        restarted = time.monotonic()
        self.start(import_metadata=metadata)
        self.settle_import(project)
        return exported, time.monotonic() - restarted

    def settle_import(self, project: str) -> None:
        """Make the emulator import now, and tell `lives` when it is done: the first request
        after a start imports, and is answered once the import is complete."""
        probe = (
            f"http://{self.host}/v1/projects/{project}/databases/(default)/documents/chaos/probe"
        )
        with contextlib.suppress(urllib.error.HTTPError):  # 404: no probe document; imported
            urllib.request.urlopen(probe, timeout=120).close()
        self.lives.import_settled(system_clock())


class MarkedExpiries(FirestoreExpiredLeases):
    """A jumped sweep's expiries, each marked in `jumped` before its commit can land.

    The monitor excuses an order whose lease a jump expired (`invariants._excuse`); a snapshot
    that sees the expiry must find the mark, so it cannot wait for the sweep's report (a sweep
    takes seconds, and one that fails midway has no report). A mark is taken back where the
    expiry did not land; one whose commit lost its answer is kept (it may have landed).
    """

    def __init__(self, db: firestore.Client, *, policy: CallPolicy, jumped: set[str]) -> None:
        super().__init__(db, policy=policy)
        self._jumped = jumped

    def expire(self, lease: ExpiredLease, now: datetime) -> bool:
        marked = lease.client_intent_id not in self._jumped
        self._jumped.add(lease.client_intent_id)
        landed = super().expire(lease, now)
        if not landed and marked:
            self._jumped.discard(lease.client_intent_id)
        return landed


@dataclass
class Server:
    """One functions-framework process and where each of its lives' logs begin and end."""

    name: str
    functions: FunctionsServer
    kill_offsets: list[int] = field(default_factory=list)
    """Byte offsets in the log at which a life ended by SIGKILL."""
    kill_times: list[datetime] = field(default_factory=list)

    def kill_and_restart(self) -> None:
        self.functions.kill()
        self.kill_times.append(system_clock())
        self.kill_offsets.append(self.functions.log_path.stat().st_size)
        self.functions.start()

    def lives(self) -> list[tuple[list[dict[str, Any]], datetime | None]]:
        """The structured records of each life, and when that life was killed (None: alive)."""
        raw = self.functions.log_path.read_bytes()
        bounds = [0, *self.kill_offsets, len(raw)]
        out = []
        for index in range(len(bounds) - 1):
            chunk = raw[bounds[index] : bounds[index + 1]].decode(errors="replace")
            records = []
            for line in chunk.splitlines():
                if line.startswith("{"):
                    with contextlib.suppress(json.JSONDecodeError):
                        records.append(json.loads(line))
            killed = self.kill_times[index] if index < len(self.kill_times) else None
            out.append((records, killed))
        return out


@dataclass
class Published:
    """A message as published, with the id Pub/Sub gave it."""

    message: Message
    message_id: str


@dataclass
class OutageRecord:
    at: float
    cut_seconds: float
    export_seconds: float
    emulator_start_seconds: float
    probe_recovery_seconds: float | None
    calls_in_flight: int


@dataclass
class KillRecord:
    at: float
    servers: tuple[int, ...]
    hung_calls: int


@dataclass
class JumpRecord:
    at: float
    seconds: float
    expired: int
    error: str | None
    expired_intents: list[str] = field(default_factory=list)


@dataclass
class StormRecord:
    """What one zombie storm did."""

    storm: ZombieStorm
    intent: str
    reached: bool = False
    """The first attempt paused at its point (else the storm ended there)."""
    taken_over: bool = False
    """A newer attempt ended the intent while the first was paused."""
    take_over_outcome: str | None = None
    paused_seconds: float = 0.0
    note: str = ""


@dataclass
class RunLog:
    """What the rig did, for the report."""

    published: list[Published] = field(default_factory=list)
    outages: list[OutageRecord] = field(default_factory=list)
    kills: list[KillRecord] = field(default_factory=list)
    jumps: list[JumpRecord] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    zombie: dict[str, Any] = field(default_factory=dict)
    storms: list[StormRecord] = field(default_factory=list)
    final_sweep: dict[str, Any] = field(default_factory=dict)
    reconcile: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


class Topics:
    """Three topics with push subscriptions (no retry policy): both servers, S1 only, S2 only."""

    def __init__(self, project: str, run: str, s1: FunctionsServer, s2: FunctionsServer) -> None:
        self.publisher = PublisherClient()
        self.subscriber = SubscriberClient()
        self._project, self._run = project, run
        self.topics = {
            name: self.publisher.topic_path(project, f"chaos-{run}-{name}")
            for name in (TOPIC_BOTH, TOPIC_S1, TOPIC_S2)
        }
        wiring = [(TOPIC_BOTH, s1), (TOPIC_BOTH, s2), (TOPIC_S1, s1), (TOPIC_S2, s2)]
        self.subscriptions: list[str] = []
        for topic in self.topics.values():
            self.publisher.create_topic(request={"name": topic})
        for index, (name, server) in enumerate(wiring):
            path = self.subscriber.subscription_path(project, f"chaos-{run}-{name}-{index}")
            self.subscriber.create_subscription(
                request={
                    "name": path,
                    "topic": self.topics[name],
                    "push_config": {"push_endpoint": server.url},
                    "ack_deadline_seconds": 10,
                }
            )
            self.subscriptions.append(path)

    def dedicated(self, name: str, server: FunctionsServer) -> str:
        """A new topic pushing to `server` alone, named `name`: nothing else's failed pushes
        (the emulator backs a failing subscription off, by tens of seconds after an outage)
        delay its first delivery."""
        topic = self.publisher.topic_path(self._project, f"chaos-{self._run}-{name}")
        self.publisher.create_topic(request={"name": topic})
        self.topics[name] = topic
        path = self.subscriber.subscription_path(self._project, f"chaos-{self._run}-{name}")
        self.subscriber.create_subscription(
            request={
                "name": path,
                "topic": topic,
                "push_config": {"push_endpoint": server.url},
                "ack_deadline_seconds": 10,
            }
        )
        self.subscriptions.append(path)
        return name

    def publish(self, topic: str, data: bytes) -> Future[str]:
        return self.publisher.publish(self.topics[topic], data)  # type: ignore[return-value]

    def close(self) -> None:
        for path in self.subscriptions:
            with contextlib.suppress(Exception):
                self.subscriber.delete_subscription(request={"subscription": path})
        for topic in self.topics.values():
            with contextlib.suppress(Exception):
                self.publisher.delete_topic(request={"topic": topic})
        self.subscriber.close()
        with contextlib.suppress(Exception):
            self.publisher.stop()


class Rig:
    """Starts everything for one run; `close()` stops it all (each process by its own group)."""

    def __init__(self, plan: Plan, workdir: Path, project: str) -> None:
        self.plan = plan
        self.project = project
        self.workdir = workdir
        self.log = RunLog()
        self._stack = contextlib.ExitStack()
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="chaos")
        self._stack.callback(self._pool.shutdown, wait=True, cancel_futures=False)
        # Storms, outages and kills run one at a time, in timeline order: a storm's take-over
        # never meets a store that is down or a server that is cold-starting, and an outage or
        # a kill always finds its victims' calls in flight. Each starts late if one still runs.
        self._serial = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chaos-serial")
        self._stack.callback(self._serial.shutdown, wait=True, cancel_futures=False)
        self.sandbox = self._stack.enter_context(AlpacaSandbox())
        self.emulator = OwnedFirestore(workdir)
        self._stack.callback(self.emulator.stop)
        self.proxy: CuttableProxy | None = None
        self.servers: dict[int, Server] = {}
        self.sweep_server: FunctionsServer | None = None
        self.reconcile_server: FunctionsServer | None = None
        self.topics: Topics | None = None
        self.pause_dir = workdir / "pauses"
        self.pause_dir.mkdir()
        self.jumped: set[str] = set()
        """Intents whose lease a clock jump expired (read by the monitor: see its excuses)."""

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        began = time.monotonic()
        env = self._function_env_without_store()
        # The functions need only the proxy's address to start; the emulator comes up meanwhile.
        emulator_started = self._pool.submit(self.emulator.start)
        # Closing waits for that start first, so that a failed start-up stops the emulator too.
        self._stack.callback(wait_for_futures, [emulator_started])
        self.proxy = CuttableProxy(self.emulator.host)
        self._stack.callback(self.proxy.close)
        env["FIRESTORE_EMULATOR_HOST"] = self.proxy.address
        for index in (1, 2):
            functions = FunctionsServer(
                "execute_intent", "cloudevent", env, self.workdir / f"execute_intent-s{index}.log"
            )
            self.servers[index] = Server(f"S{index}", functions)
        self.sweep_server = FunctionsServer(
            "sweep_reservations", "http", env, self.workdir / "sweep_reservations.log"
        )
        self.reconcile_server = FunctionsServer(
            "reconcile_orders", "http", env, self.workdir / "reconcile_orders.log"
        )
        processes = [s.functions for s in self.servers.values()]
        processes += [self.sweep_server, self.reconcile_server]
        for functions in processes:
            self._stack.callback(functions.kill)
        list(self._pool.map(lambda f: f.start(), processes))
        emulator_started.result()
        self.direct = self._client(self.emulator.host)
        self.proxied = self._client(self.proxy.address)
        self.probe = self._client(self.proxy.address)
        self.topics = Topics(
            self.project, f"{self.plan.seed}", *(self.servers[i].functions for i in (1, 2))
        )
        self._stack.callback(self.topics.close)
        self._seed_documents()
        self.log.timings["start"] = time.monotonic() - began

    def close(self) -> None:
        self._stack.close()

    def _client(self, address: str) -> firestore.Client:
        context = client_at(address, self.project)
        client = self._stack.enter_context(context)
        return client

    def _function_env_without_store(self) -> dict[str, str]:
        return {
            "GOOGLE_CLOUD_PROJECT": self.project,
            "BROKER": "alpaca",
            "APCA_API_KEY_ID": alpaca_sandbox.KEY_ID,
            "APCA_API_SECRET_KEY": alpaca_sandbox.SECRET_KEY,
            "APCA_API_BASE_URL": self.sandbox.base_url,
            # A loopback Alpaca is not Alpaca's paper host, so only LIVE may reach it.
            "AGENT_MODE": "LIVE",
            **self.plan.timing.env(),
            "PYTHONPATH": str(PAUSE_HOOK),
            "CHAOS_PAUSE_DIR": str(self.pause_dir),
        }

    def _seed_documents(self) -> None:
        batch = self.direct.batch()
        for account in self.plan.accounts:
            batch.set(
                self.direct.collection("tenants", account.tenant_id, "accounts").document(
                    account.account_id
                ),
                account.document(),
            )
        for tenant in self.plan.halted_tenants:
            batch.set(
                self.direct.collection("tenants", tenant, "ops").document("execution_kill_switch"),
                {"enabled": True},
            )
        for symbol in SYMBOLS:
            batch.set(
                self.direct.collection("market_quotes").document(symbol),
                {**QUOTE, "ts": system_clock()},
            )
        batch.commit()
        # The probe reads through the proxy once, so that it holds a channel as functions do.
        self.probe.collection("chaos").document("probe").get(timeout=5)

    # -- the hands ----------------------------------------------------------------------

    def publish(self, message: Message) -> Published:
        assert self.topics is not None
        message_id = self.topics.publish(message.topic, message.data).result(timeout=30)
        published = Published(message, message_id)
        self.log.published.append(published)
        return published

    def jump_clock(self, seconds: float, at: float = 0.0) -> JumpRecord:
        """One sweep whose clock reads `seconds` ahead (through the proxy, like any instance)."""
        sweeper = Sweeper(
            MarkedExpiries(self.proxied, policy=SWEEP_POLICY, jumped=self.jumped),
            clock=lambda: system_clock() + timedelta(seconds=seconds),
            deadline_seconds=10.0,
        )
        try:
            report = sweeper.sweep()
            expired = [path.rsplit("/", 1)[-1] for path in report.expired_ids]
            record = JumpRecord(at, seconds, report.expired, None, expired)
        except Exception as exc:  # the store may be down right now: that is part of the storm
            record = JumpRecord(at, seconds, 0, repr(exc)[:200])
        self.log.jumps.append(record)
        return record

    def outage(self, outage: Outage) -> None:
        """Cut the proxy, restart the emulator keeping its data, restore after the duration."""
        assert self.proxy is not None
        outage_over = threading.Event()

        def probe_during_outage() -> None:
            # Calls keep coming during an outage, as they do from the functions.
            while not outage_over.is_set():
                with contextlib.suppress(Exception):
                    self.probe.collection("chaos").document("probe").get(retry=None, timeout=1)
                outage_over.wait(0.5)

        # Mid-run means mid-call: orders reach the broker and are answered only once the store
        # is gone, so their invocations must record their outcome during the outage.
        in_call = self._stage_calls(
            outage.victims, self.plan.timing.broker_timeout * 0.25, "broker calls in flight"
        )
        cut_at = time.monotonic()
        self.proxy.cut()
        prober = threading.Thread(target=probe_during_outage, daemon=True)
        prober.start()
        # Let requests that were already inside the emulator finish before the export.
        time.sleep(0.5)
        exported, started = self.emulator.restart_keeping_data(self.project)
        remaining = outage.duration - (time.monotonic() - cut_at)
        if remaining > 0:
            time.sleep(remaining)
        self.proxy.restore()
        restored_at = time.monotonic()
        outage_over.set()
        prober.join()
        recovery: float | None = None
        deadline = restored_at + 30
        while time.monotonic() < deadline:
            try:
                self.probe.collection("chaos").document("probe").get(retry=None, timeout=1)
                recovery = time.monotonic() - restored_at
                break
            except Exception:
                time.sleep(0.05)
        self.log.outages.append(
            OutageRecord(outage.at, restored_at - cut_at, exported, started, recovery, in_call)
        )

    def kill(self, kill: Kill) -> None:
        """Hang broker calls, SIGKILL the servers mid-call, start them again on their ports."""
        hung = self._stage_calls(
            kill.victims, self.plan.timing.broker_timeout + 3, "broker calls to hang"
        )
        in_threads([self.servers[i].kill_and_restart for i in kill.servers])
        self.log.kills.append(KillRecord(kill.at, kill.servers, hung))

    def _stage_calls(self, victims: tuple[Message, ...], hang: float, what: str) -> int:
        """Publish `victims` with broker hangs queued first; how many hangs are in flight.

        Bounded: if the calls do not come in time, the fault happens anyway (an idle instance
        killed, an outage between calls, is part of the storm too).
        """
        faults = tuple(alpaca_sandbox.hang_after_accept(hang) for _ in victims)
        self.sandbox.inject_next("POST", *faults)
        for message in victims:
            self.publish(message)
        with contextlib.suppress(AssertionError):
            wait_until(
                lambda: still_queued(self.sandbox, "POST", faults) == 0,
                timeout=5,
                interval=0.02,
                what=what,
            )
        return len(faults) - still_queued(self.sandbox, "POST", faults)

    def final_sweep(self) -> None:
        assert self.sweep_server is not None
        status, report = self.sweep_server.post()
        self.log.final_sweep = {"status": status, **(report if isinstance(report, dict) else {})}

    def reconcile(self) -> None:
        """One `main.reconcile_orders` run, as Cloud Scheduler calls it."""
        assert self.reconcile_server is not None
        status, report = self.reconcile_server.post()
        self.log.reconcile = {"status": status, **(report if isinstance(report, dict) else {})}

    # -- the staged take-over -----------------------------------------------------------

    def zombie_takeover(self) -> None:
        """An invocation that has its broker's answer loses its lease to a take-over.

        A (S1) gets its order's answer and is paused before its release (the `after` pause
        point); the jumped sweep expires A's lease; B (S2) takes over and sits in a slow broker
        call (its order lookup); A resumes and releases while B holds the lease. The fence must
        refuse A's release; without it A overwrites B's reservation and B's release, finding the
        document already released, leaves B's lease counted in the account's in-flight document.
        Staged with a pause rather than timed calls, so a slow machine cannot reorder it.
        """
        zombie = self.plan.zombie
        coid = zombie.payload["client_intent_id"]
        message = Message(
            kind="zombie",
            data=json.dumps(zombie.payload).encode(),
            at=0.0,
            topic=TOPIC_S1,
            intent_id=coid,
            payload_hash=payload_hash(zombie.payload),
            account=zombie.account.key,
        )
        at_broker = client_order_id_for(
            zombie.payload["tenant_id"], zombie.payload["broker_account_id"], coid
        )
        (self.pause_dir / f"{at_broker}.after").touch()
        began = time.monotonic()
        self.publish(message)
        s1, s2 = self.servers[1].functions, self.servers[2].functions
        wait_until(
            lambda: (self.pause_dir / f"{at_broker}.paused").exists() and s1.stopped(),
            timeout=30,
            what="A paused with its order's answer",
        )
        in_call = time.monotonic() - began
        try:
            jump = self.jump_clock(self.plan.timing.ttl * 2, at=-1.0)
            doc = self.direct.collection(
                "tenants", zombie.account.tenant_id, "execution_reservations"
            )
            lapsed = (doc.document(coid).get().to_dict() or {}).get("status") == "expired"
            # B's first broker call is slow: the lookup of the order by client_order_id (a retry
            # asks the broker first). A resumes and releases while B holds the lease.
            self.sandbox.inject("GET", alpaca_sandbox.hang_after_accept(zombie.second_hang))
            self.publish(dataclasses.replace(message, topic=TOPIC_S2))
            wait_until(
                lambda: any(
                    r.get("client_intent_id") == coid and int(r.get("attempt") or 0) >= 2
                    for r in s2.events("exec.reservation.acquired")
                ),
                timeout=30,
                what="B's take-over of the zombie intent",
            )
        finally:
            self._resume(s1, at_broker)

        def answered(server: int) -> bool:
            return any(
                record.get("client_intent_id") == coid
                for record in self.servers[server].functions.events("exec.delivery.acked")
            )

        # Both invocations must have finished (A on S1, B on S2) before the storm starts: the
        # document reads `released` as soon as either releases, which proves nothing.
        wait_until(
            lambda: answered(1) and answered(2),
            timeout=60,
            what="both deliveries of the zombie intent to be answered",
        )
        self.log.zombie = {
            "intent": coid,
            "a_paused_after_s": round(in_call, 2),
            "jump_expired": jump.expired,
            "a_lease_expired_by_jump": lapsed,
            "took_s": round(time.monotonic() - began, 2),
        }

    # -- zombie storms --------------------------------------------------------------------

    def zombie_storm(self, storm: ZombieStorm) -> None:
        """A storm (run on the serial executor: see `__init__`) on two serving servers."""
        # A server still cold-starting after a kill is no place to stage a pause.
        self._bounded_wait(lambda: all(_serving(s.functions) for s in self.servers.values()), 60)
        self._zombie_storm(storm)

    def _zombie_storm(self, storm: ZombieStorm) -> None:
        """Pause the first attempt at `storm.point` past its lease while the other server takes
        the intent over (the transition turned on meanwhile), then let the zombie resume."""
        assert self.topics is not None
        server = self.servers[storm.server].functions
        other = self.servers[3 - storm.server].functions
        intent = storm.payload["client_intent_id"]
        first = self.topics.dedicated(f"{intent}-first", server)
        second = self.topics.dedicated(f"{intent}-takeover", other)
        message = self._storm_message(storm, first)
        assert message.intent_id is not None
        record = StormRecord(storm, message.intent_id)
        self.log.storms.append(record)
        coid = client_order_id_for(storm.account.tenant_id, storm.account.account_id, record.intent)
        if storm.point == "inside":
            # Accepted, then answered only after the pause: the zombie's answer is lost.
            self.sandbox.inject_for_order(coid, alpaca_sandbox.hang_after_accept(STORM_SPAN))
        else:
            # Shielded from the queued broker faults: a lost answer would skip the `after` pause
            # (and leave a `before` zombie's order to the reconciler rather than to its own
            # settle, a path `inside` storms already take).
            self.sandbox.inject_for_order(coid, alpaca_sandbox.no_fault())
            (self.pause_dir / f"{coid}.{storm.point}").touch()
        self.publish(message)
        record.reached = self._await_pause(storm, server, coid)
        if not record.reached:
            record.note = "the first attempt never reached its pause point"
            self._withdraw_pause(storm, server, coid)
            return
        paused = time.monotonic()
        try:
            self.publish(dataclasses.replace(message, topic=second))
            self._take_over(storm, record)
        finally:
            self._resume(server, coid)
            record.paused_seconds = round(time.monotonic() - paused, 1)

    def _withdraw_pause(self, storm: ZombieStorm, server: FunctionsServer, coid: str) -> None:
        """Cancel a pause not reached in time; one claimed meanwhile is let go once it stops."""
        try:
            (self.pause_dir / f"{coid}.{storm.point}").unlink()
        except FileNotFoundError:
            if storm.point != "inside":
                self._bounded_wait((self.pause_dir / f"{coid}.paused").exists, 30.0)
        self._resume(server, coid)

    def _resume(self, server: FunctionsServer, coid: str) -> None:
        """Let a paused process go on: the word its pause waits for, then SIGCONT."""
        (self.pause_dir / f"{coid}.resume").touch()
        server.signal(signal.SIGCONT)

    def resume_all(self) -> None:
        """After the timeline: no plan left behind, no server left paused."""
        for plan in self.pause_dir.glob("*.before"):
            plan.unlink(missing_ok=True)
        for plan in self.pause_dir.glob("*.after"):
            plan.unlink(missing_ok=True)
        for paused in self.pause_dir.glob("*.paused"):
            paused.with_suffix(".resume").touch()
        for server in self.servers.values():
            server.functions.signal(signal.SIGCONT)

    def _storm_message(self, storm: ZombieStorm, topic: str) -> Message:
        payload = dict(storm.payload)
        if storm.transition == "stale":
            age = self.plan.timing.intent_max_age - STALE_MARGIN
            born = system_clock() - timedelta(seconds=age)
            payload["created_at"] = born.isoformat().replace("+00:00", "Z")
        return Message(
            kind="storm",
            data=json.dumps(payload).encode(),
            at=storm.at,
            topic=topic,
            intent_id=payload["client_intent_id"],
            payload_hash=payload_hash(payload),
            account=storm.account.key,
        )

    def _await_pause(self, storm: ZombieStorm, server: FunctionsServer, coid: str) -> bool:
        """Wait (bounded) until the first attempt is paused at its point."""
        if storm.point == "inside":
            reached = self._bounded_wait(lambda: coid in self.sandbox.orders, REACH_SECONDS)
            if reached:
                server.signal(signal.SIGSTOP)
        else:
            reached = self._bounded_wait((self.pause_dir / f"{coid}.paused").exists, REACH_SECONDS)
        return reached and self._bounded_wait(server.stopped, 5.0)

    @staticmethod
    def _bounded_wait(condition: Callable[[], bool], timeout: float) -> bool:
        """Whether `condition` held within `timeout` s (an error reading it counts as not yet:
        the rig's own reads meet the storm's Firestore outages too)."""

        def holds() -> bool:
            try:
                return condition()
            except Exception:
                return False

        with contextlib.suppress(AssertionError):
            wait_until(holds, timeout=timeout, interval=0.05, what="a storm step")
            return True
        return False

    def _take_over(self, storm: ZombieStorm, record: StormRecord) -> None:
        """Until the other server's attempt has ended the intent (bounded), the transition on."""
        ref = self.direct.collection(
            "tenants", storm.account.tenant_id, "execution_reservations"
        ).document(record.intent)
        # The lease was taken just before the pause: it ends a TTL from now at the latest.
        latest = system_clock() + timedelta(seconds=self.plan.timing.ttl)
        lease_ends = _read(ref, attempts=3).get("expires_at") or latest
        if storm.transition.startswith("halt"):
            # Shortly before the lease lapses: the take-over meets it, the rest of the storm
            # only briefly (a global switch halts every intent meanwhile).
            wait = (lease_ends - system_clock()).total_seconds() - 2.0
            if wait > 0:
                time.sleep(wait)
            self._switch(storm, on=True)
        try:
            record.taken_over = self._bounded_wait(
                lambda: _ended_by_take_over(ref.get(timeout=5).to_dict() or {}),
                self.plan.timing.ttl + 10.0,
            )
        finally:
            if storm.transition.startswith("halt"):
                self._switch(storm, on=False)
        record.take_over_outcome = _read(ref).get("outcome")

    def _switch(self, storm: ZombieStorm, *, on: bool) -> None:
        """Turn the storm's kill switch on or off (the account's: trading mode OFF), retrying
        through an outage: a switch left on would halt the rest of the run."""
        tenant, account = storm.account.key

        def flip() -> bool:
            if storm.transition == "halt_account":
                mode = "OFF" if on else firestore.DELETE_FIELD
                ref = self.direct.collection("tenants", tenant, "accounts").document(account)
                ref.update({"trading_mode": mode}, timeout=5)
                return True
            scope = (
                self.direct
                if storm.transition == "halt_global"
                else self.direct.document("tenants", tenant)
            )
            scope.collection("ops").document("execution_kill_switch").set(
                {"enabled": on}, timeout=5
            )
            return True

        if not self._bounded_wait(flip, 90.0):
            self.log.errors.append(f"storm {storm.transition}: could not turn it {on}")

    # -- the storm ----------------------------------------------------------------------

    def run_timeline(self) -> None:
        """Publish every message and fire every fault at its planned time; wait for all."""
        plan = self.plan
        assert self.topics is not None
        for index in range(BURST_SIZE):
            self.topics.dedicated(burst_topic(index), self.servers[1 + index % 2].functions)
        for message in plan.messages:
            if message.kind == "limit_burst" and message.account and message.intent_id:
                # A slow broker (accepted, answered within the call's deadline) keeps a burst
                # in flight together, where a limit must count intents in flight.
                coid = client_order_id_for(*message.account, message.intent_id)
                self.sandbox.inject_for_order(coid, alpaca_sandbox.hang_after_accept(BURST_CALL))
        pool, serial = self._pool, self._serial
        events: list[tuple[float, int, ThreadPoolExecutor, Callable[[], Any]]] = []
        for order, message in enumerate(plan.messages):
            events.append((message.at, order, pool, lambda m=message: self.publish(m)))
        for fault in plan.broker_faults:
            events.append(
                (fault.at, 0, pool, lambda f=fault: self.sandbox.inject(f.method, f.fault))
            )
        for outage in plan.outages:
            events.append((outage.at, 0, serial, lambda o=outage: self.outage(o)))
        for kill in plan.kills:
            events.append((kill.at, 0, serial, lambda k=kill: self.kill(k)))
        for jump in plan.jumps:
            events.append((jump.at, 0, pool, lambda j=jump: self.jump_clock(j.seconds, j.at)))
        for storm in plan.storms:
            events.append((storm.at, 0, serial, lambda z=storm: self.zombie_storm(z)))
        events.sort(key=lambda e: (e[0], e[1]))
        began = time.monotonic()
        futures = []
        for at, _order, executor, action in events:
            delay = began + at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(executor.submit(action))
        for future in futures:
            try:
                # Serial actions queue behind each other: the bound covers the queue.
                future.result(timeout=900)
            except Exception as exc:
                self.log.errors.append(f"timeline action failed: {exc!r}"[:300])
        self.log.timings["timeline"] = time.monotonic() - began

    def lives(self) -> Iterator[tuple[str, list[dict[str, Any]], datetime | None]]:
        for server in self.servers.values():
            for records, killed in server.lives():
                yield server.name, records, killed


def _ended_by_take_over(doc: dict[str, Any]) -> bool:
    """A newer attempt than the first holds the record, and has ended it."""
    return int(doc.get("attempt") or 0) >= 2 and doc.get("status") == "released"


def _read(ref: firestore.DocumentReference, attempts: int = 60) -> dict[str, Any]:
    """A document, retried through the storm's outages (bounded); {} where it never answered."""
    for _ in range(attempts):
        try:
            return ref.get(timeout=5).to_dict() or {}
        except Exception:
            time.sleep(0.5)
    return {}


def _serving(functions: FunctionsServer) -> bool:
    """Whether the server accepts connections and is not paused."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        if sock.connect_ex(("127.0.0.1", functions.port)) != 0:
            return False
    return not functions.stopped()
