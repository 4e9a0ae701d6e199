"""What one delivery costs, by outcome: Firestore documents read, written, deleted; function time.

Each delivery goes through the intake and `main.answer_delivery` (what `execute_intent` runs once
the framework has made the CloudEvent) with the default wiring, one at a time, so its wall time is
the request time Cloud Run bills at concurrency 1. Documents are counted at the client, on the
GAPIC layer every adapter's call goes through, as Firestore bills them: a document returned by a
batch get (found or missing) or a query (at least one per query) is a read; each write of a
successful commit is a write, or a delete where it deletes. A commit that fails (a lost
precondition) is not counted: Firestore does not bill it, and the default path has none without
contention.

Outcomes: `placed` (a fresh intent), `duplicate` (the same message again after it ended),
`rejected` (risk refuses: over the account's `max_order_notional_usd`), `stale` (older than
`INTENT_MAX_AGE_SECONDS`), `dead_letter` (a payload that can never be an intent: recorded, acked).
"""

from __future__ import annotations

import base64
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cloudevents.http import CloudEvent

import main
from bench.common import client, median, progress, reset
from bench.concurrency import DEPLOYED_CONCURRENCY
from bench.workload import LIMIT_PRICE, TENANT, account_ids, seed
from execution.bootstrap import Service, bootstrap
from execution.clock import system_clock
from execution.intake import delivery_from_cloud_event
from execution.settings import MAX_SHARED_READ_AGE_SECONDS, Settings

OUTCOMES = ("placed", "duplicate", "rejected", "stale", "dead_letter")
REJECTED_ACCOUNT = "acct-small"
"""An account whose `max_order_notional_usd` is below every bench order: risk rejects."""


class DocumentCounter:
    """Counts documents read, written and deleted through a client, as Firestore bills them."""

    def __init__(self, db: Any) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        api = db._firestore_api  # the GAPIC client every adapter's call goes through
        api.batch_get_documents = self._reads(api.batch_get_documents, minimum=0)
        api.run_query = self._reads(api.run_query, minimum=1)
        api.commit = self._commits(api.commit)

    def _add(self, **counts: int) -> None:
        with self._lock:
            self.counts.update(counts)

    def _reads(self, call: Callable[..., Any], *, minimum: int) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Iterator[Any]:
            # Counted as each response is taken, not once the stream ends: a single document's
            # `get` takes its one response and never exhausts the stream.
            self._add(rpcs=1)
            returned = 0
            for response in call(*args, **kwargs):
                # A batch get answers every requested document (found or missing); a query
                # answers its documents, plus progress messages that carry none.
                if "found" in response or "missing" in response or "document" in response:
                    returned += 1
                    self._add(reads=1)
                yield response
            self._add(reads=max(minimum - returned, 0))

        return counted

    def _commits(self, call: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, request: Any = None, **kwargs: Any) -> Any:
            response = call(*args, request=request, **kwargs)
            writes = list(request["writes"] if isinstance(request, dict) else request.writes)
            deletes = sum(1 for write in writes if "delete" in write)
            self._add(writes=len(writes) - deletes, deletes=deletes, rpcs=1)
            return response

        return counted


@dataclass
class OutcomeCost:
    """Per-delivery averages of one outcome."""

    outcome: str
    deliveries: int
    reads: float
    writes: float
    deletes: float
    rpcs: float
    function_ms: float
    """Median wall time of `answer_delivery`."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return {
            "outcome": self.outcome,
            "deliveries": self.deliveries,
            "reads": round(self.reads, 2),
            "writes": round(self.writes, 2),
            "deletes": round(self.deletes, 2),
            "rpcs": round(self.rpcs, 2),
            "function_ms": round(self.function_ms, 1),
        }


def measure(project: str, *, deliveries: int) -> list[OutcomeCost]:
    """`deliveries` deliveries of every outcome, one at a time, counted and timed."""
    reset(project)
    db = client(project)
    seed(db, accounts=1, budget=False)
    db.collection("tenants", TENANT, "accounts").document(REJECTED_ACCOUNT).set(
        {"max_order_notional_usd": LIMIT_PRICE / 2}
    )
    checker = client(project)  # reads what each delivery left, outside the counted client
    counter = DocumentCounter(db)
    # The quote and kill switches are read once per instance per SHARED_READ_MAX_AGE_SECONDS,
    # not per intent: kept for the whole run here, they are priced per instance-second instead.
    settings = Settings(project=project, shared_read_max_age_seconds=MAX_SHARED_READ_AGE_SECONDS)
    service = bootstrap(settings, db=db, clock=system_clock)
    progress(f"cost: {deliveries} deliveries of each outcome, one at a time")
    _deliver(service, _event(_payload("warm-0"), "warm-0"))  # clients built, caches filled
    costs = []
    for outcome in OUTCOMES:
        events = [_event_for(service, outcome, n) for n in range(deliveries)]
        counter.counts.clear()
        timings = [_deliver(service, event) for event in events]
        counts = counter.counts.copy()
        for event in events:
            _check(checker, event, outcome)
        costs.append(
            OutcomeCost(
                outcome=outcome,
                deliveries=deliveries,
                reads=counts["reads"] / deliveries,
                writes=counts["writes"] / deliveries,
                deletes=counts["deletes"] / deliveries,
                rpcs=counts["rpcs"] / deliveries,
                function_ms=median(timings),
            )
        )
    db.close()
    checker.close()
    return costs


def _event_for(service: Service, outcome: str, n: int) -> CloudEvent:
    """A delivery that ends in `outcome` (a duplicate's intent is placed first, uncounted)."""
    intent_id = f"cost-{outcome}-{n}"
    if outcome == "duplicate":
        first = _event(_payload(intent_id), intent_id)
        _deliver(service, first)
        return first
    if outcome == "rejected":
        return _event(_payload(intent_id, broker_account_id=REJECTED_ACCOUNT), intent_id)
    if outcome == "stale":
        old = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        return _event(_payload(intent_id, created_at=old), intent_id)
    if outcome == "dead_letter":
        return _event(b"{this is not json", intent_id)
    return _event(_payload(intent_id), intent_id)


def _deliver(service: Service, event: CloudEvent) -> float:
    """Answer `event` as `execute_intent` does; its wall time in ms."""
    start = time.perf_counter()
    main.answer_delivery(service, delivery_from_cloud_event(event.data, event.get("type")))
    return (time.perf_counter() - start) * 1000


def _check(db: Any, event: CloudEvent, outcome: str) -> None:
    """Raise unless `event`'s delivery ended as `outcome` wants (a run that measured otherwise)."""
    message_id = event.data["message"]["messageId"]
    if outcome == "dead_letter":
        if not db.collection("execution_dead_letters").document(message_id).get().exists:
            raise RuntimeError(f"cost bench: {message_id} was not dead-lettered")
        return
    reservation = db.collection("tenants", TENANT, "execution_reservations").document(message_id)
    recorded = (reservation.get().to_dict() or {}).get("outcome")
    expected = "placed" if outcome == "duplicate" else outcome
    if recorded != expected:
        raise RuntimeError(f"cost bench: {message_id} ended {recorded!r}, not {expected!r}")


def _payload(intent_id: str, **overrides: Any) -> dict[str, Any]:
    return {
        "tenant_id": TENANT,
        "broker_account_id": account_ids(1)[0],
        "client_intent_id": intent_id,
        "symbol": "AAPL",
        "side": "buy",
        "qty": 1,
        "order_type": "limit",
        "limit_price": LIMIT_PRICE,
        **overrides,
    }


def _event(payload: dict[str, Any] | bytes, message_id: str) -> CloudEvent:
    """The CloudEvent functions-framework makes of a Pub/Sub push of `payload`."""
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    attributes = {
        "specversion": "1.0",
        "id": message_id,
        "source": "//pubsub.googleapis.com/projects/demo-bench/topics/trade-intents",
        "type": "google.cloud.pubsub.topic.v1.messagePublished",
    }
    message = {
        "data": base64.b64encode(data).decode(),
        "messageId": message_id,
        "publishTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "attributes": {},
    }
    return CloudEvent(attributes, {"message": message, "subscription": "projects/b/s/intents"})


# -- prices ------------------------------------------------------------------------------------
# List prices in USD, looked up on 2026-12-01 with the project's search tool in stored copies of
# the public pricing pages (not the live price catalog): check them before relying on them.
FIRESTORE_SOURCE = "cloud.google.com/firestore/pricing (multi-region nam5, Standard edition)"
FIRESTORE_USD_PER_100K = {"reads": 0.06, "writes": 0.18, "deletes": 0.02}
"""Per 100,000 documents, beyond the free daily quota; regional locations list about half."""
CLOUD_RUN_SOURCE = "cloud.google.com/run/pricing (Tier 1 region, request-based billing)"
CLOUD_RUN_USD_PER_VCPU_SECOND = 0.000024
CLOUD_RUN_USD_PER_GIB_SECOND = 0.0000025
CLOUD_RUN_USD_PER_MILLION_REQUESTS = 0.40
CLOUD_RUN_ROUNDING_SECONDS = 0.1
"""Billed time is rounded up to the next 100 ms."""
DEPLOYED_VCPU = 1.0
DEPLOYED_MEMORY_GIB = 0.5
"""`execute-intent` as cloudbuild.yaml deploys it (`_CPU`, `_MEMORY`)."""


def firestore_usd_per_million(cost: dict[str, Any]) -> float:
    """Firestore's list price of a million deliveries of this outcome."""
    return sum(float(cost[kind]) * 10 * usd for kind, usd in FIRESTORE_USD_PER_100K.items())


def instance_usd_per_million(instance_seconds: float) -> float:
    """Cloud Run's list price of a million requests that each bill `instance_seconds`."""
    per_second = (
        DEPLOYED_VCPU * CLOUD_RUN_USD_PER_VCPU_SECOND
        + DEPLOYED_MEMORY_GIB * CLOUD_RUN_USD_PER_GIB_SECOND
    )
    return instance_seconds * per_second * 1e6 + CLOUD_RUN_USD_PER_MILLION_REQUESTS


def alone_seconds(function_ms: float) -> float:
    """Billed time of a request served alone: its wall time rounded up to the next 100 ms."""
    steps = math.ceil(function_ms / 1000 / CLOUD_RUN_ROUNDING_SECONDS - 1e-9)
    return max(steps, 1) * CLOUD_RUN_ROUNDING_SECONDS


def markdown(results: dict[str, Any]) -> list[str]:
    """The report's section: the table by outcome, priced per million deliveries."""
    costs = results["cost"]
    shared = _shared_seconds(results)
    lines = [
        "## Cost per intent",
        "",
        f"{costs[0]['deliveries']} deliveries of each outcome through `main.answer_delivery` (what "
        "`execute_intent` runs on the CloudEvent), one at a time, default wiring, paper broker. "
        "Documents are counted at the client as Firestore bills them (`bench/cost.py`): every "
        "document a batch get answers (found or missing) or a query returns (at least one) is "
        "a read; every write of a successful commit is a write, or a delete. Function time is "
        "the median wall time of one delivery on the emulator (production Firestore answers "
        "slower, so read it as a floor). *duplicate*: the same message again after it was "
        "placed; *rejected*: risk refused it (over `max_order_notional_usd`); *stale*: older than "
        "`INTENT_MAX_AGE_SECONDS`; *dead letter*: a payload that is not JSON.",
        "",
        "Priced per million deliveries at list prices in USD looked up on 2026-12-01 in stored "
        f"copies of the public pages (not the live catalog — check them): Firestore "
        f"[{FIRESTORE_SOURCE}]: reads ${FIRESTORE_USD_PER_100K['reads']}, writes "
        f"${FIRESTORE_USD_PER_100K['writes']}, deletes ${FIRESTORE_USD_PER_100K['deletes']} per "
        f"100,000 documents; Cloud Run functions [{CLOUD_RUN_SOURCE}]: "
        f"${CLOUD_RUN_USD_PER_VCPU_SECOND:.8f} per vCPU-second, "
        f"${CLOUD_RUN_USD_PER_GIB_SECOND:.8f} per GiB-second, "
        f"${CLOUD_RUN_USD_PER_MILLION_REQUESTS:.2f} per million requests, time rounded "
        f"up to 100 ms, for the deployed {DEPLOYED_VCPU:g} vCPU and {DEPLOYED_MEMORY_GIB:g} GiB. "
        "*Alone*: each request billed on its own (concurrency 1, or idle instances): its time "
        "rounded up to 100 ms. *Shared*: a busy instance at the deployed concurrency, "
        f"{shared * 1000:.1f} ms of instance time per placed intent (the concurrency table's "
        "rate with one client); other outcomes scaled by their function time against placed's. "
        "Free tiers are left out.",
        "",
        "| outcome | reads | writes | deletes | round trips | function ms | Firestore $/M "
        "| Cloud Run $/M alone | Cloud Run $/M shared |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    placed_ms = next(c["function_ms"] for c in costs if c["outcome"] == "placed")
    for cost in costs:
        shared_here = shared * cost["function_ms"] / placed_ms if placed_ms else float("nan")
        lines.append(
            f"| {cost['outcome'].replace('_', ' ')} | {cost['reads']:g} | {cost['writes']:g} | "
            f"{cost['deletes']:g} | {cost['rpcs']:g} | {cost['function_ms']:.1f} | "
            f"{firestore_usd_per_million(cost):.2f} | "
            f"{instance_usd_per_million(alone_seconds(cost['function_ms'])):.2f} | "
            f"{instance_usd_per_million(shared_here):.2f} |"
        )
    lines += [
        "",
        "Not in the table: the quote and both kill switches are read once per instance per "
        "`SHARED_READ_MAX_AGE_SECONDS` (1 s) while it serves intents — 3 reads per busy "
        "instance-second — and the `execute_intent` of a delivery that asks for a retry "
        "(contention, an outage) costs another delivery. Deleting a finished reservation after "
        "`RESERVATION_RETENTION_DAYS` is a TTL delete (priced as a delete). Pub/Sub and Eventarc "
        "are billed on their own.",
        "",
    ]
    return lines


def _shared_seconds(results: dict[str, Any]) -> float:
    """Instance seconds per intent at the deployed concurrency, one client (the table's rate)."""
    for cell in results.get("concurrency", []):
        if (cell["concurrency"], cell["pool"]) == (DEPLOYED_CONCURRENCY, 1):
            rate = float(cell["intents_per_s"])
            return 1 / rate if rate else float("nan")
    return float("nan")
