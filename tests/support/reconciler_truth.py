"""What the reconciler-truth emulator tests share: the service as deployed against the loopback
Alpaca sandbox on one fake clock (the sandbox stamps its orders with it too), deliveries of one
Pub/Sub message (its publish time kept, as Pub/Sub keeps it), the account's counts, and a
reconciler whose records adapter lets something happen between its read and its write."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from cloudevents.http import CloudEvent
from google.cloud import firestore

import main
from devtools.alpaca_sandbox import KEY_ID, SECRET_KEY, AlpacaSandbox
from execution.authority import TradingAuthority
from execution.bootstrap import Service, bootstrap, broker_truth
from execution.broker_truth import Verdict, VersionedRecord
from execution.brokers.alpaca import LIST_PAGE_SIZE, AlpacaBroker
from execution.brokers.base import Broker
from execution.clock import Clock, FakeClock
from execution.firestore.paths import inflight_ref
from execution.firestore.placed_records import FirestorePlacedRecords
from execution.firestore.reservation_records import FirestoreReservationRecords
from execution.intake import delivery_from_cloud_event
from execution.models import TradeIntent
from execution.reconciler import Reconciler
from execution.settings import Settings
from tests.support.alpaca_wire import alpaca_env
from tests.support.builders import FAST_POLICY, reservation, unique
from tests.support.positions import position_of

START = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
"""A Monday afternoon, far from midnight (an order counts on one day)."""


@dataclass
class World:
    """The loopback Alpaca sandbox and the service as deployed against it, on one fake clock."""

    db: firestore.Client
    project: str
    clock: FakeClock
    sandbox: AlpacaSandbox
    broker: AlpacaBroker
    service: Service

    def service_with(self, **env: str) -> Service:
        """The service under other settings (`RECONCILE_LOOKBACK_SECONDS`...), same broker."""
        return bootstrap(
            sandbox_settings(self.sandbox.base_url, self.project, **env),
            db=self.db,
            clock=self.clock,
            broker=self.broker,
        )

    def reconciler_over(self, records: FirestoreReservationRecords) -> Reconciler:
        """The reconciler as `bootstrap` wires it, over `records`."""
        return reconciler_on(self.db, self.service.settings, self.broker, records, self.clock)


@contextmanager
def world(
    db: firestore.Client,
    project: str,
    *,
    page_size: int = LIST_PAGE_SIZE,
    broker_clock_ahead: float = 0.0,
) -> Iterator[World]:
    """A `World`, torn down after: the broker lists `page_size` orders a page, and its clock
    runs `broker_clock_ahead` seconds ahead of ours (behind, where negative)."""
    clock = FakeClock(START)
    ahead = timedelta(seconds=broker_clock_ahead)
    with AlpacaSandbox(clock=lambda: clock() + ahead) as sandbox, httpx.Client() as client:
        broker = AlpacaBroker(
            key_id=KEY_ID,
            secret_key=SECRET_KEY,
            base_url=sandbox.base_url,
            client=client,
            list_page_size=page_size,
        )
        settings = sandbox_settings(sandbox.base_url, project)
        service = bootstrap(settings, db=db, clock=clock, broker=broker)
        yield World(db, project, clock, sandbox, broker, service)


def sandbox_settings(base_url: str, project: str, **env: str) -> Settings:
    """The settings of a service whose broker is the Alpaca at `base_url`."""
    return Settings.from_env(
        alpaca_env(base_url, key_id=KEY_ID, secret_key=SECRET_KEY, GOOGLE_CLOUD_PROJECT=project)
        | env
    )


def delivery(intent: TradeIntent, message_id: str, published_at: datetime) -> CloudEvent:
    """The CloudEvent of one Pub/Sub message: every delivery of it carries the same id and
    publish time."""
    data = json.dumps(intent.model_dump(mode="json")).encode()
    return CloudEvent(
        {
            "type": "google.cloud.pubsub.topic.v1.messagePublished",
            "source": "//pubsub.googleapis.com/projects/demo/topics/trade-intents",
        },
        {
            "message": {
                "data": base64.b64encode(data).decode(),
                "messageId": message_id,
                "publishTime": published_at.isoformat(),
            },
            "subscription": "projects/demo/subscriptions/trade-intents-push",
        },
    )


def deliver(service: Service, intent: TradeIntent, message_id: str, published_at: datetime) -> None:
    """One delivery of the message through `main` (ack: returns; retry: raises)."""
    event = delivery(intent, message_id, published_at)
    main.answer_delivery(service, delivery_from_cloud_event(event.data, event.get("type")))


def place(w: World, intent: TradeIntent) -> str:
    """Deliver `intent`: placed; its order's id."""
    deliver(w.service, intent, unique("m"), w.clock())
    record = reservation(w.db, intent.tenant_id, intent.client_intent_id)
    assert record["outcome"] == "placed", record
    return str(record["broker_order_id"])


def limit(db: firestore.Client, intent: TradeIntent, **limits: float) -> None:
    """Give `intent`'s account the `limits` (its intents then hold while their fate is unknown)."""
    db.collection("tenants", intent.tenant_id, "accounts").document(intent.broker_account_id).set(
        limits
    )


def account_counts(db: firestore.Client, intent: TradeIntent) -> dict[str, Any]:
    """The holds, the intent's symbol's position and the orders counted on every day."""
    state = inflight_ref(db, intent.tenant_id, intent.broker_account_id).get().to_dict() or {}
    return {
        "holds": len(state.get("leases", {})),
        "position": position_of(state, intent.symbol),
        "placed_orders": sum(state.get("placed_orders", {}).values()),
    }


def error_events(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The events logged at ERROR or above."""
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


class InterruptedRecords(FirestoreReservationRecords):
    """The real adapter, but `meanwhile` runs once between the reconciler's read of a record and
    its write of the broker's verdict (a redelivery, another reconciler)."""

    def __init__(self, db: firestore.Client, meanwhile: Callable[[], None]) -> None:
        super().__init__(db, policy=FAST_POLICY, retention=timedelta(days=7))
        self._meanwhile: Callable[[], None] | None = meanwhile
        self.verdicts_written = 0

    def record_verdict(self, current: VersionedRecord, verdict: Verdict, now: datetime) -> bool:
        meanwhile, self._meanwhile = self._meanwhile, None
        if meanwhile is not None:
            meanwhile()
        written = super().record_verdict(current, verdict, now)
        self.verdicts_written += written
        return written


def reconciler_on(
    db: firestore.Client,
    settings: Settings,
    broker: Broker,
    records: FirestoreReservationRecords,
    clock: Clock,
) -> Reconciler:
    """The reconciler as `bootstrap` wires it, over `records`."""
    placed = FirestorePlacedRecords(db, policy=FAST_POLICY)
    return Reconciler(
        broker,
        broker_truth(records, broker, settings, clock),
        placed,
        authority=TradingAuthority(
            agent_mode=settings.agent_mode, env_halted=settings.execution_halted
        ),
        clock=clock,
        lookback_seconds=settings.reconcile_lookback_seconds,
        deadline_seconds=settings.sweep_deadline_seconds,
        holds=records,
        markers=placed,
        fates=placed,
        last_call_seconds=settings.broker_call_seconds + settings.clock_skew_seconds,
    )
