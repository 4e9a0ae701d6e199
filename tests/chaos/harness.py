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
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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
from execution.sweeper import Sweeper
from tests.chaos.workload import (
    QUOTE,
    SYMBOLS,
    TOPIC_BOTH,
    TOPIC_S1,
    TOPIC_S2,
    Kill,
    Message,
    Outage,
    Plan,
    payload_hash,
)
from tests.support.builders import client_at
from tests.support.tcp_proxy import CuttableProxy
from tests.support.waiting import wait_until

SWEEP_POLICY = CallPolicy(timeout_seconds=2.0)


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
        """Export, SIGKILL, start again on the same port with the export: (export s, start s)."""
        began = time.monotonic()
        metadata = self.export(project)
        exported = time.monotonic() - began
        self.stop()
        return exported, self.start(import_metadata=metadata)


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


@dataclass
class RunLog:
    """What the rig did, for the report."""

    published: list[Published] = field(default_factory=list)
    outages: list[OutageRecord] = field(default_factory=list)
    kills: list[KillRecord] = field(default_factory=list)
    jumps: list[JumpRecord] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    zombie: dict[str, Any] = field(default_factory=dict)
    final_sweep: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


class Topics:
    """Three topics with push subscriptions (no retry policy): both servers, S1 only, S2 only."""

    def __init__(self, project: str, run: str, s1: FunctionsServer, s2: FunctionsServer) -> None:
        self.publisher = PublisherClient()
        self.subscriber = SubscriberClient()
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
        self.sandbox = self._stack.enter_context(AlpacaSandbox())
        self.emulator = OwnedFirestore(workdir)
        self._stack.callback(self.emulator.stop)
        self.proxy: CuttableProxy | None = None
        self.servers: dict[int, Server] = {}
        self.sweep_server: FunctionsServer | None = None
        self.topics: Topics | None = None

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        began = time.monotonic()
        env = self._function_env_without_store()
        # The functions need only the proxy's address to start; the emulator comes up meanwhile.
        emulator_started = self._pool.submit(self.emulator.start)
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
        processes = [s.functions for s in self.servers.values()] + [self.sweep_server]
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
            FirestoreExpiredLeases(self.proxied, policy=SWEEP_POLICY),
            clock=lambda: system_clock() + timedelta(seconds=seconds),
            deadline_seconds=10.0,
        )
        try:
            report = sweeper.sweep()
            record = JumpRecord(at, seconds, report.expired, None)
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

    # -- the staged take-over -----------------------------------------------------------

    def zombie_takeover(self) -> None:
        """An invocation in its broker call loses its lease to a clock jump and a take-over.

        A (S1) is in a slow, successful broker call; the jumped sweep expires A's lease; B (S2)
        takes over and sits in a slower broker call (its order lookup) while A returns and
        releases. The fence must
        refuse A's release; without it A overwrites B's reservation and B's release, finding the
        document already released, leaves B's lease counted in the account's in-flight document.
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
        self.sandbox.inject("POST", alpaca_sandbox.hang_after_accept(zombie.first_hang))
        began = time.monotonic()
        self.publish(message)
        at_broker = client_order_id_for(
            zombie.payload["tenant_id"], zombie.payload["broker_account_id"], coid
        )
        wait_until(
            lambda: at_broker in self.sandbox.orders, timeout=30, what="A's order at the broker"
        )
        in_call = time.monotonic() - began
        jump = self.jump_clock(self.plan.timing.ttl * 2, at=-1.0)
        doc = self.direct.collection("tenants", zombie.account.tenant_id, "execution_reservations")
        lapsed = (doc.document(coid).get().to_dict() or {}).get("status") == "expired"
        # B's first broker call is slow: the lookup of the order by client_order_id (a retry
        # asks the broker first), or, in a product that posts again, the lookup that resolves
        # the duplicate answer. A returns and releases while B holds the lease.
        self.sandbox.inject("GET", alpaca_sandbox.hang_after_accept(zombie.second_hang))
        self.publish(dataclasses.replace(message, topic=TOPIC_S2))

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
            "a_in_broker_after_s": round(in_call, 2),
            "jump_expired": jump.expired,
            "a_lease_expired_by_jump": lapsed,
            "took_s": round(time.monotonic() - began, 2),
        }

    # -- the storm ----------------------------------------------------------------------

    def run_timeline(self) -> None:
        """Publish every message and fire every fault at its planned time; wait for all."""
        plan = self.plan
        events: list[tuple[float, int, Callable[[], Any]]] = []
        for order, message in enumerate(plan.messages):
            events.append((message.at, order, lambda m=message: self.publish(m)))
        for fault in plan.broker_faults:
            events.append((fault.at, 0, lambda f=fault: self.sandbox.inject(f.method, f.fault)))
        for outage in plan.outages:
            events.append((outage.at, 0, lambda o=outage: self.outage(o)))
        for kill in plan.kills:
            events.append((kill.at, 0, lambda k=kill: self.kill(k)))
        for jump in plan.jumps:
            events.append((jump.at, 0, lambda j=jump: self.jump_clock(j.seconds, j.at)))
        events.sort(key=lambda e: (e[0], e[1]))
        began = time.monotonic()
        futures = []
        for at, _order, action in events:
            delay = began + at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(self._pool.submit(action))
        for future in futures:
            try:
                future.result(timeout=120)
            except Exception as exc:
                self.log.errors.append(f"timeline action failed: {exc!r}"[:300])
        self.log.timings["timeline"] = time.monotonic() - began

    def lives(self) -> Iterator[tuple[str, list[dict[str, Any]], datetime | None]]:
        for server in self.servers.values():
            for records, killed in server.lives():
                yield server.name, records, killed
