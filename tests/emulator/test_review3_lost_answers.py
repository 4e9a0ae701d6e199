"""Third adversarial review: a broker call that took effect but lost its answer, met by an
operator's halt with `--cancel-open`, then by the message's redelivery.

The real engine on the Firestore emulator, the real `AlpacaBroker` against the loopback Alpaca
sandbox (which takes the order and answers 503), and the real command line. What must hold: the
halt cancels the order nobody recorded (it is ours by its client order id), the redelivery asks
the broker before anything else and records what it holds (a cancelled order with nothing filled:
`rejected`, with its id), and the hold the lost answer left counts until then and never after.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from google.cloud import firestore
from typer.testing import CliRunner

from devtools.alpaca_sandbox import AlpacaSandbox, status
from execution.brokers.alpaca import AlpacaBroker
from execution.cli import app
from execution.clock import FakeClock
from execution.errors import BrokerTransientError
from execution.models import Outcome
from tests.emulator.test_review3_account_halt import operator_cli
from tests.support.builders import (
    client_order_id_of,
    emulator_service,
    live,
    make_intent,
    reservation,
    unique,
)


def account_state(db: firestore.Client, tenant: str, account: str) -> dict[str, object]:
    snap = db.collection("tenants", tenant, "execution_inflight").document(account).get()
    return snap.to_dict() or {}


def test_a_halt_cancels_an_order_whose_answer_was_lost_and_its_redelivery_records_it(
    db: firestore.Client,
    firestore_project: str,
    alpaca: AlpacaSandbox,
    alpaca_broker: AlpacaBroker,
) -> None:
    clock = FakeClock(datetime.now(UTC))
    tenant, account = unique("tenant"), unique("acct")
    db.collection("tenants", tenant, "accounts").document(account).set({"max_position_qty": 100.0})
    intent = make_intent(tenant_id=tenant, broker_account_id=account, created_at=clock())
    service = emulator_service(db, clock, settings=live(), broker=alpaca_broker)
    alpaca.inject_next("POST", status(503, "upstream unavailable", accept=True))

    with pytest.raises(BrokerTransientError):
        service.engine.execute_intent(intent)
    held = account_state(db, tenant, account)["leases"]
    context = operator_cli(db, firestore_project, alpaca, alpaca_broker, clock.advance)
    args = ["kill-switch", "on", "--tenant", tenant, "--reason", "drill", "--cancel-open", "--json"]
    command = CliRunner().invoke(app, args, obj=context)
    redelivered = service.engine.execute_intent(intent)

    assert held, "the lost answer's hold counts while the order's fate is unknown"
    assert command.exit_code == 0, command.output
    cancels = json.loads(command.stdout)["cancel_open"]["cancels"]
    assert [c["client_order_id"] for c in cancels] == [client_order_id_of(intent)]
    order = alpaca.orders[client_order_id_of(intent)]
    assert order["status"] == "canceled"
    assert len(alpaca.orders) == 1
    assert redelivered.outcome is Outcome.REJECTED
    assert redelivered.broker_order_id == order["id"]
    record = reservation(db, tenant, intent.client_intent_id)
    assert (record["outcome"], record["broker_order_id"]) == ("rejected", order["id"])
    assert record["counted_lease_id"] is None
    state = account_state(db, tenant, account)
    assert state["leases"] == {}
    assert not state.get("positions", {}).get(intent.symbol)
