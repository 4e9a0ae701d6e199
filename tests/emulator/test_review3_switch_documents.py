"""Review 3: a kill-switch document that holds no boolean never lets trading go on.

The contract's switch is `{enabled: bool}`. A switch an operator wrote by hand (the console, a
script) may hold anything: `"false"`, `0`, `null`, `{}`, a misspelt `Enabled`. Read by its truth
value, `"false"` halted while `""`, `0`, `null`, `{}` and a document without `enabled` let every
intent of the scope trade, and `kill-switch status` showed them off: what the operator wrote to
stop trading stopped nothing. A switch document that exists halts unless `enabled` is exactly
`false`; the command line shows it on and why. Through the real engine and command line on the
Firestore emulator.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from google.cloud import firestore
from typer.testing import CliRunner, Result

from execution.brokers.paper import PaperBroker
from execution.cli import app
from execution.clock import FakeClock
from execution.models import Outcome
from tests.support.builders import (
    FAST_POLICY,
    CountingBroker,
    emulator_service,
    make_intent,
    unique,
)

NOT_A_BOOLEAN: list[dict[str, Any]] = [
    {"enabled": "false"},
    {"enabled": ""},
    {"enabled": 0},
    {"enabled": None},
    {"enabled": {}},
    {"enabled": []},
    {"enabled": "no"},
    {"Enabled": True},
    {"reason": "halt everything"},
]


def switch_ref(db: firestore.Client, tenant_id: str | None) -> firestore.DocumentReference:
    parent = db if tenant_id is None else db.collection("tenants").document(tenant_id)
    return parent.collection("ops").document("execution_kill_switch")


@pytest.fixture
def cli(firestore_project: str) -> Callable[..., Result]:
    def run(*args: str) -> Result:
        return CliRunner().invoke(app, ["--project", firestore_project, *args])

    return run


@pytest.mark.parametrize("document", NOT_A_BOOLEAN, ids=repr)
def test_a_tenant_switch_holding_no_boolean_halts_the_tenant(
    db: firestore.Client, document: dict[str, Any]
) -> None:
    clock = FakeClock(datetime.now(UTC))
    intent = make_intent(tenant_id=unique("tenant"))
    switch_ref(db, intent.tenant_id).set(document)
    broker = CountingBroker(PaperBroker(db, clock=clock, policy=FAST_POLICY))

    result = emulator_service(db, clock, broker=broker).engine.execute_intent(intent)

    assert result.outcome is Outcome.HALTED
    assert broker.place_calls == 0


def test_a_switch_written_false_lets_the_tenant_trade(db: firestore.Client) -> None:
    clock = FakeClock(datetime.now(UTC))
    intent = make_intent(tenant_id=unique("tenant"))
    switch_ref(db, intent.tenant_id).set({"enabled": False, "reason": "resumed"})

    result = emulator_service(db, clock).engine.execute_intent(intent)

    assert result.outcome is Outcome.PLACED


@pytest.mark.parametrize("document", NOT_A_BOOLEAN, ids=repr)
def test_the_command_line_shows_a_switch_holding_no_boolean_on(
    db: firestore.Client, cli: Callable[..., Result], document: dict[str, Any]
) -> None:
    tenant_id = unique("tenant")
    switch_ref(db, tenant_id).set(document)

    result = cli("kill-switch", "status", "--json")

    assert result.exit_code == 0, result.output
    [row] = [row for row in json.loads(result.stdout) if row["tenant_id"] == tenant_id]
    assert row["enabled"] is True
    assert "enabled" in (row["reason"] or "")
