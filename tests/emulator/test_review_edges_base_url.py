"""Review: a wrong `APCA_API_BASE_URL` never rejects an intent for good, and is refused where it
can be told at start-up.

Issue 11 asked that a key rotation or a wrong base URL never reject every intent of that window
for good. 401/403 were made retries; a base URL with a wrong path (`.../api`, `.../v1`: a copy
from another Alpaca product) gets Alpaca's 404 "endpoint not found" for `POST /v2/orders`, which
read as "the broker refused the order": every intent of the window was `rejected`, for good. A
404 on an order request says the URL is wrong, not the order: retried, logged at ERROR for a
person. A base URL that can never be right (a query, a fragment, credentials in it) is refused at
start-up without being quoted.

The real `AlpacaBroker` against the loopback Alpaca sandbox, the engine on the Firestore emulator.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from google.cloud import firestore

from devtools.alpaca_sandbox import KEY_ID, SECRET_KEY, AlpacaSandbox
from execution.bootstrap import Service, bootstrap
from execution.brokers.alpaca import AlpacaBroker
from execution.errors import BrokerTransientError, SettingsError
from execution.models import Outcome
from execution.settings import Settings
from tests.support.alpaca_wire import alpaca_env
from tests.support.builders import make_intent, reservation

TENANT = "tenant-base-url"


@contextmanager
def service_at(db: firestore.Client, project: str, base_url: str) -> Iterator[Service]:
    settings = Settings.from_env(
        alpaca_env(base_url, key_id=KEY_ID, secret_key=SECRET_KEY, GOOGLE_CLOUD_PROJECT=project)
    )
    broker = AlpacaBroker.from_settings(settings)
    try:
        yield bootstrap(settings, db=db, broker=broker)
    finally:
        broker.close()


@pytest.mark.parametrize("suffix", ["/api", "/v1", "/v2/account"])
def test_an_order_sent_to_a_wrong_path_is_retried_never_rejected_for_good(
    db: firestore.Client,
    firestore_project: str,
    alpaca: AlpacaSandbox,
    suffix: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(logging.getLogger("execution"), "propagate", True)
    intent = make_intent(tenant_id=TENANT, qty=1, limit_price=100.0)

    with (
        service_at(db, firestore_project, alpaca.base_url + suffix) as wrong,
        pytest.raises(BrokerTransientError),
    ):
        wrong.engine.execute_intent(intent)

    record = reservation(db, TENANT, intent.client_intent_id)
    assert record["outcome"] == "exception"
    assert alpaca.orders == {}
    assert [r for r in caplog.records if r.levelno >= logging.ERROR and "alpaca" in r.name]

    # The operator fixes the URL: the redelivery places the order, once.
    with service_at(db, firestore_project, alpaca.base_url) as fixed:
        result = fixed.engine.execute_intent(intent)
    assert result.outcome is Outcome.PLACED
    assert len(alpaca.orders) == 1


@pytest.mark.parametrize(
    "base_url",
    [
        pytest.param("http://127.0.0.1:9?x=1", id="a query"),
        pytest.param("http://127.0.0.1:9#v2", id="a fragment"),
        pytest.param("http://user:hunter2@127.0.0.1:9", id="credentials"),
    ],
)
def test_a_base_url_that_can_never_be_right_is_refused_at_start_up_without_quoting_it(
    base_url: str,
) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(alpaca_env(base_url, key_id=KEY_ID, secret_key=SECRET_KEY))

    assert "APCA_API_BASE_URL" in str(refused.value)
    assert "hunter2" not in str(refused.value)
