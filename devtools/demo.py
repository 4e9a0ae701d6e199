"""`make demo`: the real path, locally — Pub/Sub push → functions-framework → Firestore.

On the emulators (those FIRESTORE_EMULATOR_HOST and PUBSUB_EMULATOR_HOST name, else its own from
`devtools.emulators`) it starts `main.execute_intent_push` and `main.sweep_reservations` as
functions-framework servers, wires a push subscription to the first, publishes sample intents one
by one — a trade, its duplicate, a broker failure, a risk rejection, a dry run, a halted tenant,
malformed payloads — runs a sweep, and prints what happened. The broker is a local Alpaca sandbox
(`devtools/alpaca_sandbox.py`), so the order count at the "broker" is visible and a broker
failure can be staged.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from google.cloud import firestore

from devtools import alpaca_sandbox, emulators
from devtools.alpaca_sandbox import AlpacaSandbox
from devtools.functions_server import FunctionsServer
from devtools.pubsub import PushChannel
from execution.clock import system_clock
from execution.firestore.reservations import FirestoreReservationManager
from execution.firestore.support import CallPolicy
from execution.reservations import Acquired, ReservationRequest

TENANT = "demo-tenant"
HALTED_TENANT = "demo-halted-tenant"
ACCOUNT = "acct-main"
STEP_TIMEOUT = 60.0


@dataclass(frozen=True)
class Step:
    """One publish in the demo script."""

    label: str
    payload: dict[str, Any] | bytes
    broker_fault: alpaca_sandbox.Fault | None = None


@dataclass(frozen=True)
class Delivered:
    """What the function did with one published message."""

    step: Step
    message_id: str
    deliveries: int
    outcome: str
    detail: str


def main() -> int:
    """Run the demo on the emulators (started here unless their variables name running ones)."""
    try:
        with emulators.running(emulators.FIRESTORE, emulators.PUBSUB):
            return _demo()
    except emulators.EmulatorUnavailable as exc:
        print(f"The demo runs on the emulators only. {exc}")
        return 2


def _demo() -> int:
    project = os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ.get("GCLOUD_PROJECT")
    project = project or "demo-execution"
    run = uuid.uuid4().hex[:6]
    logs = Path(tempfile.mkdtemp(prefix="execution-demo-"))
    db = firestore.Client(project=project)
    print(f"Trade execution demo, run {run}: Pub/Sub → functions-framework → Firestore (emulators)")

    with AlpacaSandbox() as broker:
        env = _function_env(project, broker)
        execute = FunctionsServer("execute_intent_push", "http", env, logs / "execute_intent.log")
        sweep = FunctionsServer("sweep_reservations", "http", env, logs / "sweep.log")
        started = time.monotonic()
        _say("starting execute_intent_push and sweep_reservations (functions-framework)")
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda server: server.start(), (execute, sweep)))
        print(f" ok ({time.monotonic() - started:.1f} s)")
        channel = PushChannel(project, f"trade-intents-{run}", execute.url)
        try:
            _seed(db)
            steps = _script(run)
            print(f"  broker: local Alpaca sandbox at {broker.base_url}")
            print(f"  topic {channel.topic} pushes to {execute.url}\n")
            results = [
                _publish(number, len(steps), step, channel, execute, broker)
                for number, step in enumerate(steps, 1)
            ]
            report = _sweep_an_abandoned_lease(db, sweep, run)
        finally:
            channel.close()
            execute.kill()
            sweep.kill()
        orders = broker.orders

    _print_results(db, run, results, orders, report)
    print(f"\nFunction logs (structured JSON): {logs}")
    stuck = _reservations(db, run, status="reserved")
    return 1 if stuck else 0


def _function_env(project: str, broker: AlpacaSandbox) -> dict[str, str]:
    return {
        "GOOGLE_CLOUD_PROJECT": project,
        "BROKER": "alpaca",
        "APCA_API_KEY_ID": alpaca_sandbox.KEY_ID,
        "APCA_API_SECRET_KEY": alpaca_sandbox.SECRET_KEY,
        "APCA_API_BASE_URL": broker.base_url,
        # The sandbox is not Alpaca's paper host, and PAPER mode trusts only that host.
        "AGENT_MODE": "LIVE",
        "FUNCTION_TIMEOUT_SECONDS": "20",
        "BROKER_TIMEOUT_SECONDS": "5",
    }


def _seed(db: firestore.Client) -> None:
    db.collection("tenants", TENANT, "accounts").document(ACCOUNT).set(
        {"max_order_notional_usd": 5_000.0, "max_inflight_usd": 20_000.0}
    )
    db.collection("tenants", HALTED_TENANT, "ops").document("execution_kill_switch").set(
        {"enabled": True, "reason": "demo: tenant halted by an operator"}
    )


def _script(run: str) -> list[Step]:
    def intent(name: str, **fields: Any) -> dict[str, Any]:
        return {
            "tenant_id": TENANT,
            "broker_account_id": ACCOUNT,
            "client_intent_id": f"{run}-{name}",
            "symbol": "AAPL",
            "side": "buy",
            "qty": 2,
            "order_type": "limit",
            "limit_price": 190.0,
            **fields,
        }

    first = intent("buy-aapl")
    return [
        Step("a limit buy", first),
        Step("the same intent again", first),
        Step(
            "broker answers 503 once",
            intent("buy-msft", symbol="MSFT", limit_price=410.0),
            broker_fault=alpaca_sandbox.status(503, "service unavailable (demo)"),
        ),
        Step("over the account's limit", intent("buy-too-big", qty=100)),
        Step("a dry run", intent("dry-run", dry_run=True)),
        Step("tenant kill switch on", intent("halted", tenant_id=HALTED_TENANT)),
        Step("not JSON", b"{this is not json"),
        Step("a path in an id", intent("x", client_intent_id="../../ops/execution_kill_switch")),
    ]


def _publish(
    number: int,
    total: int,
    step: Step,
    channel: PushChannel,
    server: FunctionsServer,
    broker: AlpacaSandbox,
) -> Delivered:
    if step.broker_fault is not None:
        broker.inject("POST", step.broker_fault)
    _say(f"[{number}/{total}] {step.label:<26}")
    message_id = channel.publish(step.payload)
    final = _wait(lambda: _final_event(server, message_id), f"message {message_id} to finish")
    deliveries = sum(
        1 for e in server.events("exec.delivery.received") if e["message_id"] == message_id
    )
    if final["event"] == "exec.delivery.acked":
        outcome, detail = final["outcome"], _detail(final)
    else:
        outcome, detail = "dead letter", str(final["reason"])
    retried = (
        f" after {deliveries - 1} retr{'y' if deliveries == 2 else 'ies'}" if deliveries > 1 else ""
    )
    print(f" → {outcome}{retried}")
    return Delivered(step, message_id, deliveries, outcome, detail)


def _final_event(server: FunctionsServer, message_id: str) -> dict[str, Any] | None:
    for event in server.events():
        if event.get("message_id") == message_id and event.get("event") in (
            "exec.delivery.acked",
            "exec.delivery.dead_lettered",
        ):
            return event
    return None


def _detail(event: dict[str, Any]) -> str:
    if event.get("recorded_outcome"):
        return f"already {event['recorded_outcome']}: {event.get('broker_order_id') or ''}"
    return str(event.get("reason") or event.get("broker_order_id") or "")


def _sweep_an_abandoned_lease(
    db: firestore.Client, sweep: FunctionsServer, run: str
) -> dict[str, Any]:
    """Stage what only the sweeper cleans up: an invocation that died holding a lease."""
    lease = timedelta(seconds=2)
    manager = FirestoreReservationManager(
        db, clock=system_clock, ttl=lease, policy=CallPolicy(timeout_seconds=5)
    )
    request = ReservationRequest(
        tenant_id=TENANT,
        broker_account_id=ACCOUNT,
        client_intent_id=f"{run}-died-mid-call",
        symbol="AAPL",
        amount_usd=100.0,
        payload_hash="demo",
    )
    assert isinstance(manager.acquire(request), Acquired)
    _say(f"\nsweep: an invocation died holding a lease; waiting {lease.seconds} s for it to lapse")
    time.sleep(lease.total_seconds() + 0.5)
    status, report = sweep.post()
    if status != 200:
        raise SystemExit(f"sweep_reservations answered {status}: {report}")
    print(f" → expired {report['expired']}")
    return dict(report)


def _reservations(
    db: firestore.Client, run: str, status: str | None = None
) -> list[dict[str, Any]]:
    docs = []
    for tenant in (TENANT, HALTED_TENANT):
        for snap in db.collection("tenants", tenant, "execution_reservations").stream():
            data = snap.to_dict() or {}
            if snap.id.startswith(run) and (status is None or data.get("status") == status):
                docs.append(data)
    return sorted(docs, key=lambda d: str(d["client_intent_id"]))


def _print_results(
    db: firestore.Client,
    run: str,
    results: list[Delivered],
    orders: dict[str, dict[str, Any]],
    report: dict[str, Any],
) -> None:
    short = lambda text: str(text).removeprefix(f"{run}-")  # noqa: E731
    _table(
        "What each published message became",
        ("message", "published", "deliveries", "outcome", "detail"),
        [(r.message_id, r.step.label, str(r.deliveries), r.outcome, r.detail) for r in results],
    )
    reservations = _reservations(db, run)
    _table(
        "Reservations (tenants/*/execution_reservations)",
        ("intent", "status", "outcome", "attempt", "orders at broker"),
        [
            (
                short(d["client_intent_id"]),
                d["status"],
                d["outcome"] or "",
                str(d["attempt"]),
                str(sum(1 for coid in orders if coid == d.get("client_order_id"))),
            )
            for d in reservations
        ],
    )
    letters = db.collection("execution_dead_letters").stream()
    mine = {r.message_id for r in results}
    _table(
        "Dead letters (execution_dead_letters)",
        ("message", "reason"),
        [(s.id, str((s.to_dict() or {}).get("reason", ""))) for s in letters if s.id in mine],
    )
    placed = [d for d in reservations if d["outcome"] == "placed"]
    still = [d for d in reservations if d["status"] == "reserved"]
    ours = [coid for coid in orders if coid in {d.get("client_order_id") for d in reservations}]
    print(
        f"\n{len(results)} messages, {len(reservations)} reservations: {len(placed)} placed with "
        f"{len(ours)} orders at the broker, {len(still)} still reserved; the sweep expired "
        f"{report['expired']} abandoned lease(s)."
    )


def _table(title: str, header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    widths = [min(max(len(c) for c in col), 56) for col in zip(header, *rows, strict=False)]
    print(f"\n{title}")
    for row in (header, tuple("-" * w for w in widths), *rows):
        cells = (str(c)[:w].ljust(w) for c, w in zip(row, widths, strict=True))
        print(("  " + "  ".join(cells)).rstrip())


def _say(text: str) -> None:
    print(text, end="", flush=True)


def _wait(check: Callable[[], dict[str, Any] | None], what: str) -> dict[str, Any]:
    deadline = time.monotonic() + STEP_TIMEOUT
    while (value := check()) is None:
        if time.monotonic() > deadline:
            raise SystemExit(f"\nno answer after {STEP_TIMEOUT:.0f} s waiting for {what}")
        time.sleep(0.05)
    return value


if __name__ == "__main__":
    sys.exit(main())
