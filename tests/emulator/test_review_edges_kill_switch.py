"""Review: `kill-switch on --cancel-open` also cancels the order a running broker call places.

An invocation that passed the authority just before the switch went on (its read of the switches
is up to `SHARED_READ_MAX_AGE_SECONDS` old) is inside its broker call, which may take up to
`BROKER_TIMEOUT_SECONDS`: its order reaches the broker after the switch is on. Listing the
broker's orders at once, `--cancel-open` missed it and reported a complete, clean cancel while that
order went on working. It must wait until no broker call admitted before the switch can still
land, then list.

The engine runs on the Firestore emulator with the real `AlpacaBroker` against the loopback
sandbox; its broker call is held just before the order is sent. The command runs in-process with
an injected pause (`CliContext.sleep`) in which the held call completes, as it would during a
real wait: no test waits for a time.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from google.cloud import firestore
from typer.testing import CliRunner

from devtools.alpaca_sandbox import KEY_ID, SECRET_KEY, AlpacaSandbox
from execution.bootstrap import bootstrap
from execution.brokers.alpaca import AlpacaBroker
from execution.cli import app
from execution.cli.context import CliContext
from execution.clock import system_clock
from execution.models import BrokerOrder, ExecutionResult, OrderRequest
from execution.settings import Settings
from tests.support.builders import (
    client_order_id_of,
    emulator_service,
    fast_settings,
    make_intent,
    unique,
)

SETTINGS = {
    "BROKER": "alpaca",
    "AGENT_MODE": "LIVE",  # a loopback URL is not Alpaca's paper endpoint
    "APCA_API_KEY_ID": KEY_ID,
    "APCA_API_SECRET_KEY": SECRET_KEY,
    "BROKER_TIMEOUT_SECONDS": "3",
    "FUNCTION_TIMEOUT_SECONDS": "20",
    "RESERVATION_TTL_SECONDS": "30",
    "FIRESTORE_TIMEOUT_SECONDS": "5",
    "SHARED_READ_MAX_AGE_SECONDS": "1",
    "CLOCK_SKEW_SECONDS": "2",
}
SETTLE_SECONDS = 1 + 3 + 2
"""What may pass between the switch going on and the last order admitted before it landing."""


class HeldCall:
    """An AlpacaBroker whose first `place_order` waits, just before sending, to be let go."""

    def __init__(self, inner: AlpacaBroker) -> None:
        self._inner = inner
        self.entered, self.go = threading.Event(), threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    @property
    def is_paper(self) -> bool:
        return self._inner.is_paper

    def place_order(self, order: OrderRequest) -> BrokerOrder:
        self.entered.set()
        self.go.wait()
        return self._inner.place_order(order)


def test_cancel_open_waits_out_the_broker_calls_admitted_before_the_switch(
    db: firestore.Client, firestore_project: str, alpaca: AlpacaSandbox
) -> None:
    env = {**SETTINGS, "APCA_API_BASE_URL": alpaca.base_url, "COLUMNS": "250"}
    settings = Settings.from_env({**env, "GOOGLE_CLOUD_PROJECT": firestore_project})
    broker = HeldCall(AlpacaBroker.from_settings(settings))
    service = bootstrap(settings, db=db, broker=broker)  # type: ignore[arg-type]
    tenant = unique("tenant")
    intent = make_intent(tenant_id=tenant, qty=1, limit_price=100.0)
    results: list[ExecutionResult] = []
    running = threading.Thread(target=lambda: results.append(service.engine.execute_intent(intent)))
    running.start()
    pauses: list[float] = []

    def pause(seconds: float) -> None:
        """The command's wait: meanwhile the broker call admitted before the switch ends."""
        pauses.append(seconds)
        broker.go.set()
        running.join(timeout=30)

    try:
        assert broker.entered.wait(timeout=30), "the intent never reached its broker call"
        cli = CliContext(environ={**os.environ, **env}, project_option=firestore_project)
        cli.sleep = pause
        result = CliRunner().invoke(
            app,
            [
                "kill-switch",
                "on",
                "--tenant",
                tenant,
                "--reason",
                "drill",
                "--cancel-open",
                "--json",
            ],
            obj=cli,
        )
    finally:
        broker.go.set()
        running.join(timeout=30)
        cli.close()
        broker.close()

    order = alpaca.orders[client_order_id_of(intent)]
    assert [r.outcome.value for r in results] == ["placed"]
    assert result.exit_code == 0, result.output
    assert order["status"] == "canceled"
    report = json.loads(result.stdout)["cancel_open"]
    assert [c["client_order_id"] for c in report["cancels"]] == [client_order_id_of(intent)]
    assert sum(pauses) >= SETTLE_SECONDS


def test_halting_and_resuming_an_unknown_account_does_not_make_it_known(
    db: firestore.Client, firestore_project: str
) -> None:
    """With REQUIRE_ACCOUNT_DOCUMENT=1 an account without a settings document never trades.
    `kill-switch on --account` writes `trading_mode: OFF` into that document, creating it; `off`
    must leave the account as unknown as it was, not a known account without limits."""
    tenant, account = unique("tenant"), unique("acct")
    service = emulator_service(
        db, system_clock, settings=fast_settings(require_account_document=True)
    )
    env = {"COLUMNS": "250", "GOOGLE_CLOUD_PROJECT": firestore_project}

    def cli(*args: str) -> None:
        result = CliRunner().invoke(app, ["--project", firestore_project, *args], env=env)
        assert result.exit_code == 0, result.output

    cli("kill-switch", "on", "--tenant", tenant, "--account", account, "--reason", "drill")
    cli("kill-switch", "off", "--tenant", tenant, "--account", account, "--reason", "done")
    result = service.engine.execute_intent(make_intent(tenant_id=tenant, broker_account_id=account))

    assert result.outcome.value == "rejected"
    assert (result.reason or "").startswith("account_unknown")
