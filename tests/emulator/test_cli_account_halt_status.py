"""An account halted by `kill-switch on --tenant T --account A` shows where operators look.

The halt lives in the account's settings document (`trading_mode: OFF`), not in a switch
document, so `kill-switch status` and `status` read the halted accounts too: an operator who
halted one account (or found one OFF by hand) sees it, rather than "allowed by every switch".
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from google.cloud import firestore
from typer.testing import CliRunner, Result

from execution.cli import app
from tests.support.builders import unique

WIDE = {"COLUMNS": "250"}


@pytest.fixture(autouse=True)
def empty_project(reset_firestore: Callable[[], None]) -> None:
    """Listings across tenants see the whole project: start each test empty."""


@pytest.fixture
def cli(firestore_emulator_host: str, firestore_project: str) -> Callable[..., Result]:
    def run(*args: str) -> Result:
        return CliRunner().invoke(app, ["--project", firestore_project, *args], env=WIDE)

    return run


def test_kill_switch_status_lists_a_halted_account_with_who_and_why(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    tenant = unique("tenant")
    halt = ["--tenant", tenant, "--account", "acct-1", "--reason", "runaway", "--by", "ann"]
    cli("kill-switch", "on", *halt)

    for scope in ([], ["--tenant", tenant]):
        result = cli("kill-switch", "status", *scope, "--json")

        assert result.exit_code == 0, result.output
        [row] = [r for r in json.loads(result.stdout) if r["broker_account_id"] == "acct-1"]
        assert (row["tenant_id"], row["enabled"], row["reason"], row["updated_by"]) == (
            tenant,
            True,
            "runaway",
            "ann",
        )


def test_an_account_set_off_by_hand_is_listed_as_halted_too(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    tenant = unique("tenant")
    db.collection("tenants", tenant, "accounts").document("acct-2").set({"trading_mode": "OFF"})

    result = cli("kill-switch", "status", "--json")

    [row] = [r for r in json.loads(result.stdout) if r["broker_account_id"] == "acct-2"]
    assert row["enabled"] is True and "not by kill-switch" in row["reason"]


def test_a_resumed_account_is_no_longer_listed(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    tenant = unique("tenant")
    cli("kill-switch", "on", "--tenant", tenant, "--account", "acct-1", "--reason", "drill")
    cli("kill-switch", "off", "--tenant", tenant, "--account", "acct-1")

    result = cli("kill-switch", "status", "--tenant", tenant, "--json")

    assert [r["broker_account_id"] for r in json.loads(result.stdout)] == [None, None]


def test_status_names_the_halted_account_instead_of_saying_all_is_allowed(
    cli: Callable[..., Result],
) -> None:
    tenant = unique("tenant")
    cli("kill-switch", "on", "--tenant", tenant, "--account", "acct-1", "--reason", "drill")

    result = cli("status")

    assert result.exit_code == 0, result.output
    assert "Execution allowed by every kill switch" not in result.stdout
    assert f"Halted accounts (trading_mode OFF): account {tenant}/acct-1" in result.stdout
