"""Small builders for intents, settings and emulator-backed services used across test tiers."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from google.cloud import firestore

from devtools.alpaca_sandbox import KEY_ID, SECRET_KEY
from execution.bootstrap import Service, bootstrap
from execution.brokers.paper import PaperBroker
from execution.client_order_ids import client_order_id_for, parse_plain
from execution.clock import Clock
from execution.firestore.paths import LEDGER, reservation_ref, tenant_collection
from execution.firestore.support import CallPolicy
from execution.models import BrokerOrder, OrderRequest, TradeIntent
from execution.settings import AgentMode, Settings

FAST_POLICY = CallPolicy(timeout_seconds=2.0)
"""Short store deadlines, so an outage test fails over in seconds."""


def unique(prefix: str) -> str:
    """An id no other test uses (tests share one emulator project per module)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def make_intent(**overrides: Any) -> TradeIntent:
    """A valid limit-buy intent with unique ids; override any field."""
    fields: dict[str, Any] = {
        "tenant_id": "tenant-a",
        "broker_account_id": unique("acct"),
        "client_intent_id": unique("intent"),
        "symbol": "AAPL",
        "side": "buy",
        "qty": 1,
        "order_type": "limit",
        "limit_price": 100.0,
    }
    fields.update(overrides)
    return TradeIntent.model_validate(fields)


def client_order_id_of(intent: TradeIntent) -> str:
    """The client order id the engine sends the broker for `intent`."""
    return client_order_id_for(intent.tenant_id, intent.broker_account_id, intent.client_intent_id)


def payload_client_order_id(payload: dict[str, Any]) -> str:
    """The client order id the engine sends the broker for an intent given as a JSON payload."""
    return client_order_id_for(
        payload["tenant_id"], payload["broker_account_id"], payload["client_intent_id"]
    )


def intent_id_at_broker(client_order_id: str) -> str:
    """The intent id a (plain-form) client order id carries; a foreign id is returned as is."""
    parsed = parse_plain(client_order_id)
    return parsed[2] if parsed else client_order_id


def make_order_request(**overrides: Any) -> OrderRequest:
    """A limit buy of 10 AAPL at 100.5 under client order id `intent-1`; override any field."""
    fields: dict[str, Any] = {
        "tenant_id": "tenant-a",
        "broker_account_id": "acct-1",
        "client_order_id": "intent-1",
        "symbol": "AAPL",
        "side": "buy",
        "qty": 10.0,
        "order_type": "limit",
        "limit_price": 100.5,
        "time_in_force": "day",
    }
    return OrderRequest(**{**fields, **overrides})


def fast_settings(**overrides: Any) -> Settings:
    """Settings with short timings for tests; TTL still above the timeout."""
    fields: dict[str, Any] = {
        "project": None,
        "function_timeout_seconds": 20.0,
        "reservation_ttl_seconds": 30.0,
        "firestore_timeout_seconds": 2.0,
    }
    fields.update(overrides)
    return Settings(**fields)


@contextmanager
def client_at(address: str, project: str) -> Iterator[firestore.Client]:
    """A Firestore client whose emulator address is `address` (e.g. a cuttable proxy)."""
    previous = os.environ.get("FIRESTORE_EMULATOR_HOST")
    os.environ["FIRESTORE_EMULATOR_HOST"] = address
    try:
        client = firestore.Client(project=project)
    finally:
        if previous is None:
            del os.environ["FIRESTORE_EMULATOR_HOST"]
        else:
            os.environ["FIRESTORE_EMULATOR_HOST"] = previous
    try:
        yield client
    finally:
        client.close()


class CountingBroker:
    """Wraps a real broker and counts the calls that reach it."""

    def __init__(self, inner: PaperBroker) -> None:
        self._inner = inner
        self.place_calls = 0

    @property
    def is_paper(self) -> bool:
        return self._inner.is_paper

    def place_order(self, order: OrderRequest) -> BrokerOrder:
        self.place_calls += 1
        return self._inner.place_order(order)

    def get_order_by_client_order_id(
        self, tenant_id: str, broker_account_id: str, client_order_id: str
    ) -> BrokerOrder | None:
        return self._inner.get_order_by_client_order_id(
            tenant_id, broker_account_id, client_order_id
        )

    def get_order(
        self, tenant_id: str, broker_account_id: str, broker_order_id: str
    ) -> BrokerOrder | None:
        return self._inner.get_order(tenant_id, broker_account_id, broker_order_id)

    def list_orders(
        self, *, after: datetime, until: datetime | None = None
    ) -> Iterator[BrokerOrder]:
        return self._inner.list_orders(after=after, until=until)

    def cancel_order(self, tenant_id: str, broker_account_id: str, broker_order_id: str) -> None:
        self._inner.cancel_order(tenant_id, broker_account_id, broker_order_id)


def emulator_service(
    db: firestore.Client, clock: Clock, *, settings: Settings | None = None, **overrides: Any
) -> Service:
    """The real service on the emulator, with a counting paper broker unless one is given."""
    overrides.setdefault("broker", CountingBroker(PaperBroker(db, clock=clock, policy=FAST_POLICY)))
    return bootstrap(settings or fast_settings(), clock=clock, db=db, **overrides)


def ledger_entries(db: firestore.Client, tenant_id: str, client_intent_id: str) -> list[str]:
    """The broker order ids in the ledger for one intent: two would mean two orders placed."""
    ledger = tenant_collection(db, tenant_id, LEDGER)
    return [
        snap.id
        for snap in ledger.where(
            filter=firestore.FieldFilter("client_intent_id", "==", client_intent_id)
        ).stream()
    ]


def reservation(db: firestore.Client, tenant_id: str, client_intent_id: str) -> dict[str, Any]:
    """The reservation document as stored."""
    snap = reservation_ref(db, tenant_id, client_intent_id).get()
    assert snap.exists, f"no reservation for {client_intent_id}"
    return snap.to_dict() or {}


class PausedInsideTheCall(CountingBroker):
    """Runs `meanwhile` once, inside the first `place_order`, before the order reaches the broker:
    the attempt has passed every check and is paused in its broker call."""

    def __init__(self, inner: Any, meanwhile: Callable[[], None]) -> None:
        super().__init__(inner)
        self._meanwhile: Callable[[], None] | None = meanwhile

    def place_order(self, order: OrderRequest) -> BrokerOrder:
        meanwhile, self._meanwhile = self._meanwhile, None
        if meanwhile is not None:
            meanwhile()
        return super().place_order(order)


def live(**overrides: Any) -> Settings:
    """Settings for the Alpaca sandbox: a loopback URL is not Alpaca's paper endpoint."""
    return fast_settings(agent_mode=AgentMode.LIVE, **overrides)


def sandbox_cli_env(base_url: str) -> dict[str, str]:
    """The operator command line's environment for a broker at the Alpaca sandbox `base_url`."""
    return {
        "BROKER": "alpaca",
        "AGENT_MODE": "LIVE",  # a loopback URL is not Alpaca's paper endpoint
        "APCA_API_KEY_ID": KEY_ID,
        "APCA_API_SECRET_KEY": SECRET_KEY,
        "APCA_API_BASE_URL": base_url,
    }
