"""Fixtures the emulator tests share: the loopback Alpaca sandbox, a broker pointed at it, and
a scripted wire server."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from google.cloud import firestore

from devtools.alpaca_sandbox import KEY_ID, SECRET_KEY, AlpacaSandbox
from execution.brokers.alpaca import AlpacaBroker
from tests.support.reconciler_truth import World, world
from tests.support.wire_server import WireServer


@pytest.fixture
def alpaca() -> Iterator[AlpacaSandbox]:
    with AlpacaSandbox() as server:
        yield server


@pytest.fixture
def alpaca_broker(alpaca: AlpacaSandbox) -> Iterator[AlpacaBroker]:
    with httpx.Client() as client:
        yield AlpacaBroker(
            key_id=KEY_ID, secret_key=SECRET_KEY, base_url=alpaca.base_url, client=client
        )


@pytest.fixture
def w(
    db: firestore.Client, firestore_project: str, reset_firestore: Callable[[], None]
) -> Iterator[World]:
    """The Alpaca sandbox and the service deployed against it (`tests.support.reconciler_truth`),
    each test alone in the store: the reconciler reads every tenant's records."""
    with world(db, firestore_project) as made:
        yield made


@pytest.fixture
def counted_db(db: firestore.Client) -> Iterator[firestore.Client]:
    """A client of its own, so that counting its RPCs cannot count another test's."""
    client = firestore.Client(project=db.project)
    yield client
    client.close()


@pytest.fixture
def wire() -> Iterator[WireServer]:
    """A loopback server that answers each request with the next scripted answer."""
    with WireServer() as server:
        yield server
