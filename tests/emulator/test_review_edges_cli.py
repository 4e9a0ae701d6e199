"""Review: text from outside never drives the operator's terminal.

The command line prints what brokers and records say: a broker's refusal (kept as the
reservation's `error`), the order a broker answers a lookup with. A broker, a proxy in front of it
or anything that can write a record could put terminal control sequences there — an OSC that
retitles the window or writes the clipboard, a CSI that clears the screen or hides the lines
after it, a bidi override that reorders what an operator reads. Printed as they are, they run in
the operator's terminal. Each must reach the screen escaped (`\\x1b`), and the record must keep
the broker's words printable.

An intent runs through `main.execute_intent` into the engine on the Firestore emulator with the
real `AlpacaBroker` against a loopback server that answers with such text; then the commands
(`intent`, `status`, `reservations`) run in-process against the same project.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from google.cloud import firestore
from typer.testing import CliRunner, Result

import main
from execution.bootstrap import Service, bootstrap
from execution.cli import app
from execution.models import TradeIntent
from execution.settings import Settings
from tests.support.alpaca_wire import alpaca_env, intent_event, order_json
from tests.support.builders import make_intent, reservation
from tests.support.wire_server import WireServer, http_answer

KEY_ID = "PKREVIEWCLI00000001"
SECRET_KEY = "review-cli-secret-0000001"
TENANT = "tenant-terminal"
HOSTILE = "\x1b]52;c;cm0gLXJmIH4=\x07\x1b[2J\x1b[8mhidden\x1b[0m\x9b31m\u202eok"
"""An OSC 52 clipboard write, a screen clear, concealed text, a C1 CSI and a bidi override."""
CONTROLS = ("\x1b", "\x07", "\x9b", "\u202e")


def wire_env(wire: WireServer, project: str) -> dict[str, str]:
    return alpaca_env(
        wire.base_url, key_id=KEY_ID, secret_key=SECRET_KEY, GOOGLE_CLOUD_PROJECT=project
    )


@pytest.fixture
def service(db: firestore.Client, wire: WireServer, firestore_project: str) -> Service:
    return bootstrap(Settings.from_env(wire_env(wire, firestore_project)), db=db)


@pytest.fixture
def cli(wire: WireServer, firestore_project: str) -> Callable[..., Result]:
    """`python -m execution --project <this module's project> ARGS`, the broker at `wire`."""

    def run(*args: str) -> Result:
        env = {**wire_env(wire, firestore_project), "COLUMNS": "250"}
        return CliRunner().invoke(app, ["--project", firestore_project, *args], env=env)

    return run


def deliver(intent: TradeIntent) -> None:
    main.execute_intent(intent_event(intent))


@pytest.fixture
def refused(
    db: firestore.Client, wire: WireServer, service: Service, monkeypatch: pytest.MonkeyPatch
) -> TradeIntent:
    """An intent the broker refused in hostile words: recorded `rejected` with its message."""
    monkeypatch.setattr(main, "_service", service)
    intent = make_intent(tenant_id=TENANT, qty=1, limit_price=100.0)
    wire.script(
        http_answer(
            b"HTTP/1.1 422 Unprocessable Entity",
            json.dumps({"code": 42210000, "message": f"refused {HOSTILE} by the desk"}).encode(),
            b"Content-Type: application/json",
        )
    )
    deliver(intent)
    return intent


def test_the_record_keeps_a_brokers_hostile_words_printable(
    db: firestore.Client, refused: TradeIntent
) -> None:
    record = reservation(db, TENANT, refused.client_intent_id)

    assert record["outcome"] == "rejected"
    assert "by the desk" in record["error"]
    assert [c for c in CONTROLS if c in record["error"]] == []


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(("status", "--tenant", TENANT), id="status"),
        pytest.param(("reservations", "--tenant", TENANT), id="reservations"),
    ],
)
def test_listings_print_no_terminal_control_sequence(
    cli: Callable[..., Result],
    db: firestore.Client,
    refused: TradeIntent,
    command: tuple[str, ...],
) -> None:
    # Whatever the record holds (a record written before the fix, or by hand): escaped on screen.
    db.document("tenants", TENANT, "execution_reservations", refused.client_intent_id).update(
        {"error": f"broker_rejected: {HOSTILE}"}
    )

    result = cli(*command)

    assert result.exit_code == 0, result.output
    assert refused.client_intent_id in result.stdout
    assert [c for c in CONTROLS if c in result.stdout] == []


def test_intent_prints_no_terminal_control_sequence_from_the_record_or_the_broker(
    cli: Callable[..., Result], db: firestore.Client, wire: WireServer, refused: TradeIntent
) -> None:
    db.document("tenants", TENANT, "execution_reservations", refused.client_intent_id).update(
        {"error": f"broker_rejected: {HOSTILE}"}
    )
    # The order asked live: the broker's own status text is hostile too.
    wire.script(
        http_answer(
            b"HTTP/1.1 200 OK",
            order_json(refused, status=f"accepted{HOSTILE}"),
            b"Content-Type: application/json",
        )
    )

    result = cli("intent", TENANT, refused.client_intent_id)

    assert result.exit_code == 0, result.output
    assert "Broker order, asked live" in result.stdout
    assert [c for c in CONTROLS if c in result.stdout] == []
    assert "\\x1b" in result.stdout  # shown, escaped: the operator sees something was there


def strict_json(text: str) -> Any:
    """JSON as every parser reads it: `NaN` and `Infinity` are not JSON (RFC 8259)."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(("intent", TENANT, "{intent}", "--no-broker", "--json"), id="intent"),
        pytest.param(("reservations", "--tenant", TENANT, "--json"), id="reservations"),
        pytest.param(("status", "--tenant", TENANT, "--json"), id="status"),
    ],
)
def test_json_output_stays_json_when_a_record_holds_a_non_finite_number(
    cli: Callable[..., Result],
    db: firestore.Client,
    refused: TradeIntent,
    command: tuple[str, ...],
) -> None:
    # A record edited by hand, or written by an older version: Firestore stores NaN and infinity.
    db.document("tenants", TENANT, "execution_reservations", refused.client_intent_id).update(
        {"amount_usd": float("nan"), "repair": {"cancel": float("inf")}}
    )

    result = cli(*(part.format(intent=refused.client_intent_id) for part in command))

    assert result.exit_code == 0, result.output
    told = json.dumps(strict_json(result.stdout))
    assert refused.client_intent_id in told or command[0] == "status"
