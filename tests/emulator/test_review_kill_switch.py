"""Adversarial review of `kill-switch on --cancel-open` against an intent already in flight.

The real engine on the Firestore emulator with the Alpaca sandbox, and the real command line. An
intent passed every gate (the kill switch was off) and is inside its broker call when an operator
halts its tenant with `--cancel-open`; the command's listing cannot see the order that is not
placed yet. What a person must be able to rely on: a command that answers success leaves no
open order of ours in the halted scope.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from google.cloud import firestore
from typer.testing import CliRunner, Result

from devtools.alpaca_sandbox import AlpacaSandbox
from execution.brokers.alpaca import AlpacaBroker
from execution.cli import app
from execution.clock import FakeClock
from execution.models import Outcome
from tests.support.builders import (
    PausedInsideTheCall,
    client_order_id_of,
    emulator_service,
    live,
    make_intent,
    sandbox_cli_env,
    unique,
)


def halt_with_cancel_open(project: str, alpaca: AlpacaSandbox, tenant_id: str) -> Result:
    env = sandbox_cli_env(alpaca.base_url)
    args = ["--project", project, "kill-switch", "on", "--tenant", tenant_id]
    return CliRunner().invoke(app, [*args, "--reason", "drill", "--cancel-open", "--json"], env=env)


def test_cancel_open_never_answers_success_while_an_intent_of_the_scope_can_still_place(
    db: firestore.Client,
    firestore_project: str,
    alpaca: AlpacaSandbox,
    alpaca_broker: AlpacaBroker,
) -> None:
    clock = FakeClock(datetime.now(UTC))
    intent = make_intent(tenant_id=unique("tenant"))
    halted: list[Result] = []
    broker = PausedInsideTheCall(
        alpaca_broker,
        meanwhile=lambda: halted.append(
            halt_with_cancel_open(firestore_project, alpaca, intent.tenant_id)
        ),
    )

    result = emulator_service(db, clock, settings=live(), broker=broker).engine.execute_intent(
        intent
    )

    assert result.outcome is Outcome.PLACED
    command = halted[0]
    assert command.stdout, command.output
    answered_success = (
        command.exit_code == 0 and not json.loads(command.stdout)["cancel_open"]["cancels"]
    )
    still_open = alpaca.orders[client_order_id_of(intent)]["status"] not in ("canceled",)
    assert not (answered_success and still_open)
    in_flight = json.loads(command.stdout)["cancel_open"]["in_flight"]
    assert [lease["client_intent_id"] for lease in in_flight] == [intent.client_intent_id]
