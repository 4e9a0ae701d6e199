"""`make demo`: a handful of intents through the engine on the emulator, then what became of them.

Runs inside `firebase emulators:exec` (which sets FIRESTORE_EMULATOR_HOST); refuses to run against
anything but an emulator, since it writes sample data.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from google.cloud import firestore

from execution.bootstrap import bootstrap
from execution.brokers.paper import PaperBroker
from execution.clock import system_clock
from execution.errors import BrokerTransientError, ExecutionError
from execution.firestore.support import CallPolicy
from execution.models import BrokerOrder, OrderRequest, TradeIntent
from execution.settings import Settings
from execution.telemetry import JsonFormatter

TENANT = "demo-tenant"
LOG_FILE = "demo.log"


class FlakyOnceBroker:
    """The paper broker, except that the first call for chosen intents times out."""

    is_paper = True

    def __init__(self, inner: PaperBroker, fail_once: set[str]) -> None:
        self._inner = inner
        self._fail_once = set(fail_once)

    def place_order(self, order: OrderRequest) -> BrokerOrder:
        if order.client_order_id in self._fail_once:
            self._fail_once.discard(order.client_order_id)
            raise BrokerTransientError("simulated broker timeout (demo)")
        return self._inner.place_order(order)

    def get_order_by_client_order_id(
        self, tenant_id: str, broker_account_id: str, client_order_id: str
    ) -> BrokerOrder | None:
        return self._inner.get_order_by_client_order_id(
            tenant_id, broker_account_id, client_order_id
        )

    def cancel_order(self, tenant_id: str, broker_account_id: str, broker_order_id: str) -> None:
        self._inner.cancel_order(tenant_id, broker_account_id, broker_order_id)


@dataclass(frozen=True)
class Step:
    """One delivery in the demo script."""

    label: str
    intent: TradeIntent


def _intent(run: str, name: str, **fields: object) -> TradeIntent:
    base: dict[str, object] = {
        "tenant_id": TENANT,
        "broker_account_id": "acct-main",
        "client_intent_id": f"{run}-{name}",
        "symbol": "AAPL",
        "side": "buy",
        "qty": 2,
        "order_type": "limit",
        "limit_price": 190.0,
    }
    base.update(fields)
    return TradeIntent.model_validate(base)


def main() -> int:
    """Run the demo; returns the process exit code."""
    if not os.environ.get("FIRESTORE_EMULATOR_HOST"):
        print("The demo writes sample data, so it runs only on the emulator: use `make demo`.")
        return 2
    _log_to_file(LOG_FILE)
    settings = Settings.from_env()
    project = settings.project or "demo-execution"
    db = firestore.Client(project=project)
    run = uuid.uuid4().hex[:6]
    policy = CallPolicy(timeout_seconds=settings.firestore_timeout_seconds)

    db.collection("tenants", TENANT, "accounts").document("acct-main").set(
        {"max_order_notional_usd": 5_000.0, "max_inflight_usd": 20_000.0}
    )
    placed = _intent(run, "buy-aapl")
    flaky = _intent(run, "buy-msft", symbol="MSFT", qty=1, limit_price=410.0)
    too_big = _intent(run, "buy-too-big", qty=100)
    dry = _intent(run, "dry-run", dry_run=True)
    steps = [
        Step("place", placed),
        Step("broker times out", flaky),
        Step("redelivery after timeout", flaky),
        Step("over the risk limit", too_big),
        Step("dry run", dry),
        Step("duplicate delivery", placed),
    ]
    broker = FlakyOnceBroker(
        PaperBroker(db, clock=system_clock, policy=policy), {flaky.client_intent_id}
    )
    engine = bootstrap(settings, db=db, broker=broker).engine

    print(f"Demo run {run}: {len(steps)} deliveries to the engine on the Firestore emulator\n")
    rows = []
    for number, step in enumerate(steps, 1):
        try:
            result = engine.execute_intent(step.intent)
            outcome = result.outcome.value
            if result.recorded_outcome:
                outcome += f" (of {result.recorded_outcome.value})"
            detail = result.reason or result.broker_order_id or ""
        except ExecutionError as exc:
            outcome, detail = "retry", f"{type(exc).__name__}: {exc}"
        print(f"  [{number}/{len(steps)}] {step.label:<26} {outcome}")
        rows.append(
            (step.label, step.intent.client_intent_id.removeprefix(f"{run}-"), outcome, detail)
        )

    _table("Deliveries", ("delivery", "intent", "outcome", "detail"), rows)
    reservations = db.collection("tenants", TENANT, "execution_reservations")
    docs = [s.to_dict() or {} for s in reservations.stream() if s.id.startswith(run)]
    _table(
        "Reservations (tenants/demo-tenant/execution_reservations)",
        ("intent", "status", "outcome", "attempt", "broker_order_id"),
        [
            (
                d["client_intent_id"].removeprefix(f"{run}-"),
                d["status"],
                d["outcome"] or "",
                str(d["attempt"]),
                d.get("broker_order_id") or "",
            )
            for d in sorted(docs, key=lambda d: str(d["client_intent_id"]))
        ],
    )
    stuck = [d for d in docs if d["status"] == "reserved"]
    print(f"\n{len(docs)} reservations, {len(stuck)} still reserved. Structured logs: {LOG_FILE}")
    return 1 if stuck else 0


def _log_to_file(path: str) -> None:
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("execution")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False


def _table(title: str, header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    widths = [min(width, 60) for width in widths]
    print(f"\n{title}")
    print(("  " + "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))).rstrip())
    print("  " + "  ".join("-" * w for w in widths))
    for row in rows:
        cells = (str(c)[:w].ljust(w) for c, w in zip(row, widths, strict=True))
        print(("  " + "  ".join(cells)).rstrip())


if __name__ == "__main__":
    sys.exit(main())
