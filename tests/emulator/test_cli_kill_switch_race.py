"""Two operators (or an operator and the automation) switching one kill switch at once.

Each change is decided on a read of the switch's document and written only onto that document
(`execution.firestore.switches.change_switch`). The race is staged, not timed: the first command
runs the second, whole, through `CliContext.after_switch_read` — between its own read and its
write — so every run meets the same interleaving on the Firestore emulator.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from google.cloud import firestore
from typer.testing import CliRunner, Result

from execution.cli import app
from execution.cli.context import EXIT_PROBLEMS, CliContext
from tests.support.builders import unique

Scope = list[str]


@pytest.fixture(autouse=True)
def empty_project(reset_firestore: Callable[[], None]) -> None:
    """The global switch is one document per project: start each test without it."""


def run(
    db: firestore.Client,
    project: str,
    *args: str,
    after_read: Callable[[], None] | None = None,
) -> Result:
    """One `kill-switch` command, in-process, on this module's emulator project."""
    context = CliContext(project_option=project, db_client=db, environ={"COLUMNS": "250"})
    if after_read is not None:
        context.after_switch_read = after_read
    return CliRunner().invoke(app, ["kill-switch", *args], obj=context)


def once(action: Callable[[], Any]) -> Callable[[], None]:
    """A hook that runs `action` at its first call only (the command may read again after)."""
    pending = [action]

    def hook() -> None:
        while pending:
            pending.pop()()

    return hook


def switch_document(db: firestore.Client, scope: Scope) -> dict[str, Any]:
    """The document that holds the scope's switch (an account's: its settings document)."""
    if not scope:
        ref = db.collection("ops").document("execution_kill_switch")
    elif len(scope) == 2:
        ref = db.collection("tenants", scope[1], "ops").document("execution_kill_switch")
    else:
        ref = db.collection("tenants", scope[1], "accounts").document(scope[3])
    return ref.get().to_dict() or {}


def is_on(document: dict[str, Any], scope: Scope) -> bool:
    if len(scope) == 4:
        return document.get("trading_mode") == "OFF" and document["kill_switch"]["enabled"]
    return document.get("enabled") is True


@pytest.fixture(params=["global", "tenant", "account"])
def scope(request: pytest.FixtureRequest) -> Iterator[Scope]:
    tenant = unique("race-tenant")
    yield {
        "global": [],
        "tenant": ["--tenant", tenant],
        "account": ["--tenant", tenant, "--account", "acct-1"],
    }[request.param]


def test_an_on_landing_after_an_offs_read_stays_on_and_the_off_says_so(
    db: firestore.Client, firestore_project: str, scope: Scope
) -> None:
    if len(scope) == 4:  # a known account, trading LIVE before any halt
        db.collection("tenants", scope[1], "accounts").document(scope[3]).set(
            {"trading_mode": "LIVE", "max_inflight_usd": 1000.0}
        )
    automation: list[Result] = []

    def automation_halts() -> None:
        automation.append(
            run(db, firestore_project, "on", *scope, "--reason", "loss limit", "--by", "robot")
        )

    resume = run(
        db, firestore_project, "off", *scope, "--by", "alice", after_read=once(automation_halts)
    )

    assert automation[0].exit_code == 0, automation[0].output
    document = switch_document(db, scope)
    assert is_on(document, scope), document
    assert resume.exit_code == EXIT_PROBLEMS, resume.output
    assert "not changed" in resume.output and "robot" in resume.output


def test_an_off_whose_switch_did_not_move_lifts_it_past_another_fields_change(
    db: firestore.Client, firestore_project: str
) -> None:
    tenant = unique("race-tenant")
    ref = db.collection("tenants", tenant, "ops").document("execution_kill_switch")
    run(db, firestore_project, "on", "--tenant", tenant, "--reason", "incident", "--by", "bob")

    resume = run(
        db,
        firestore_project,
        "off",
        "--tenant",
        tenant,
        "--by",
        "alice",
        after_read=once(lambda: ref.set({"ticket": "INC-7"}, merge=True)),
    )

    assert resume.exit_code == 0, resume.output
    document = ref.get().to_dict() or {}
    assert (document["enabled"], document["updated_by"], document["ticket"]) == (
        False,
        "alice",
        "INC-7",
    )


def test_an_account_halt_remembers_the_mode_written_after_its_read(
    db: firestore.Client, firestore_project: str
) -> None:
    tenant = unique("race-tenant")
    ref = db.collection("tenants", tenant, "accounts").document("acct-1")
    ref.set({"trading_mode": "PAPER", "max_inflight_usd": 1000.0})

    account = ["--tenant", tenant, "--account", "acct-1"]
    mode_changes = once(lambda: ref.update({"trading_mode": "LIVE"}))

    halt = run(db, firestore_project, "on", *account, "--reason", "drill", after_read=mode_changes)
    resume = run(db, firestore_project, "off", *account)

    assert (halt.exit_code, resume.exit_code) == (0, 0), halt.output + resume.output
    assert (ref.get().to_dict() or {})["trading_mode"] == "LIVE"


def test_two_halts_of_an_unknown_account_leave_no_document_after_the_resume(
    db: firestore.Client, firestore_project: str
) -> None:
    tenant = unique("race-tenant")
    account = ["--tenant", tenant, "--account", "acct-1"]
    others: list[Result] = []

    first = run(
        db,
        firestore_project,
        "on",
        *account,
        "--reason",
        "one",
        after_read=once(
            lambda: others.append(run(db, firestore_project, "on", *account, "--reason", "two"))
        ),
    )
    resume = run(db, firestore_project, "off", *account)

    assert (first.exit_code, others[0].exit_code, resume.exit_code) == (0, 0, 0)
    assert not db.collection("tenants", tenant, "accounts").document("acct-1").get().exists


def test_a_cancel_open_whose_switch_was_lifted_during_its_wait_says_so_and_exits_1(
    db: firestore.Client, firestore_project: str, scope: Scope
) -> None:
    resumed: list[Result] = []

    def someone_resumes_during_the_wait(_seconds: float) -> None:
        resumed.append(run(db, firestore_project, "off", *scope, "--by", "bob"))

    context = CliContext(
        project_option=firestore_project,
        db_client=db,
        environ={"COLUMNS": "250"},
        sleep=someone_resumes_during_the_wait,
    )
    halt = CliRunner().invoke(
        app,
        ["kill-switch", "on", *scope, "--reason", "incident", "--cancel-open", "--json"],
        obj=context,
    )

    assert resumed[0].exit_code == 0, resumed[0].output
    assert halt.exit_code == EXIT_PROBLEMS, halt.output
    lifted = json.loads(halt.stdout)["cancel_open"]["switch_lifted"]
    assert "turned off while the command ran" in lifted
    assert "bob" in lifted or len(scope) == 4  # an unknown account's halt document is deleted


def test_a_cancel_open_whose_switch_stayed_on_reports_nothing_lifted(
    db: firestore.Client, firestore_project: str, scope: Scope
) -> None:
    context = CliContext(
        project_option=firestore_project,
        db_client=db,
        environ={"COLUMNS": "250"},
        sleep=lambda _seconds: None,
    )
    halt = CliRunner().invoke(
        app,
        ["kill-switch", "on", *scope, "--reason", "incident", "--cancel-open", "--json"],
        obj=context,
    )

    assert halt.exit_code == 0, halt.output
    assert json.loads(halt.stdout)["cancel_open"]["switch_lifted"] is None
