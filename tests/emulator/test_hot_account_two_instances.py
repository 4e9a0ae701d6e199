"""Two instances, each serving many intents at once, race on one account with every limit set.

Each instance is a service on its own Firestore client with its own turns, so within an instance
the writers of the account's state hand the state they committed to the next in line
(`account_turns`), and between the instances only the preconditions decide: a state one instance
handed over is stale as soon as the other writes. The limits must hold at every instant all the
same, sampled continuously by the `LimitsMonitor` of the single-instance burst, and every intent
ends (placed, or rejected by a limit) once redelivered as Pub/Sub would.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

from google.cloud import firestore

from execution.brokers.paper import PaperBroker
from execution.clock import system_clock
from execution.models import Outcome
from tests.emulator.test_limits_concurrency import (
    LIMITS,
    PATIENT_POLICY,
    SETTINGS,
    Account,
    Deliveries,
    LimitsMonitor,
    SlowBroker,
    redeliver,
)
from tests.support.builders import emulator_service, make_intent

PER_INSTANCE = 20


def test_two_instances_racing_on_one_account_never_exceed_any_limit_at_any_instant(
    db: firestore.Client,
) -> None:
    first = make_intent()
    account = Account(first.tenant_id, first.broker_account_id)
    db.collection("tenants", account.tenant_id, "accounts").document(account.account_id).set(LIMITS)
    rng = random.Random(7)
    intents = [
        make_intent(
            broker_account_id=account.account_id,
            side="buy" if rng.random() < 0.75 else "sell",
            qty=float(rng.randint(1, 5)),
            limit_price=10.0,
        )
        for _ in range(2 * PER_INSTANCE)
    ]
    other_db = firestore.Client(project=db.project)
    brokers = [
        SlowBroker(PaperBroker(client, clock=system_clock, policy=PATIENT_POLICY))
        for client in (db, other_db)
    ]
    engines = [
        emulator_service(client, system_clock, settings=SETTINGS, broker=broker).engine
        for client, broker in zip((db, other_db), brokers, strict=True)
    ]
    seen = Deliveries()
    monitor = LimitsMonitor(db, account)
    monitor.start()
    threads = [
        threading.Thread(target=redeliver, args=(engines[n % 2], intent, seen))
        for n, intent in enumerate(intents)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 150  # a bound against a hang, not a performance assertion
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    time.sleep(monitor.lag + 0.2)  # let the monitor see the end state too
    monitor.stop()
    other_db.close()

    outcomes = Counter(r.outcome for r in seen.results.values())
    reasons = Counter((r.reason or "").split(":")[0] for r in seen.results.values())
    assert len(seen.results) == len(intents), (outcomes, seen.retries)
    assert monitor.breaches == [], monitor.breaches[:5]
    assert monitor.snapshots > 0, (monitor.snapshots, monitor.failed_reads)
    placed_calls = sum(broker.place_calls for broker in brokers)
    assert outcomes[Outcome.PLACED] == placed_calls <= LIMITS["max_daily_orders"]
    # The limits were reached, not merely respected: they turned intents away.
    assert reasons["max_order_notional_exceeded"] + reasons["max_position_exceeded"] > 0, reasons
    print(  # reported by `pytest -s`: how the race went
        f"outcomes={dict(outcomes)} reasons={dict(reasons)} retries={dict(seen.retries)} "
        f"snapshots={monitor.snapshots} peaks={dict(monitor.peaks)}"
    )
