"""The operator command line (`python -m execution`) driven through Typer's runner on the emulators.

Each test runs one command against this module's own Firestore emulator project (and the Pub/Sub
emulator), then asserts on the documents it wrote or read and on what it printed. Reservations
are made by the real `FirestoreReservationManager` with a clock set in the past, so "stuck" means
what it means in production: a lease whose invocation never released it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.pubsub_v1 import PublisherClient, SubscriberClient
from typer.testing import CliRunner, Result

from devtools.emulators import free_loopback_port
from execution.cli import app
from execution.cli.context import EXIT_UNREACHABLE, EXIT_USAGE, CliContext
from execution.clock import FakeClock, system_clock
from execution.firestore.dead_letters import FirestoreDeadLetters
from execution.firestore.reservations import FirestoreReservationManager
from execution.intake import Delivery, parse_intent
from execution.models import Outcome
from execution.reservations import Acquired, ReservationHandle, ReservationRequest
from tests.support.builders import (
    FAST_POLICY,
    emulator_service,
    fast_settings,
    make_intent,
    reservation,
    unique,
)
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
TTL = timedelta(seconds=600)
WIDE = {"COLUMNS": "250"}
"""A wide terminal, so Rich never folds an id across two lines of a table."""


@pytest.fixture(autouse=True)
def empty_project(reset_firestore: Callable[[], None]) -> None:
    """Sweeps and cross-tenant listings see the whole project: start each test empty."""


@pytest.fixture
def cli(firestore_emulator_host: str, firestore_project: str) -> Callable[..., Result]:
    """Run `python -m execution --project <this module's project> ARGS` in-process."""

    def run(*args: str, env: Mapping[str, str | None] | None = None, **extra: Any) -> Result:
        return CliRunner().invoke(
            app, ["--project", firestore_project, *args], env={**WIDE, **(env or {})}, **extra
        )

    return run


# -- reservations made by the real manager --------------------------------------------------------


def reserve(
    db: firestore.Client,
    tenant_id: str,
    account: str,
    *,
    ago_seconds: float = 0.0,
    intent_id: str | None = None,
) -> tuple[str, ReservationHandle]:
    """Acquire a lease as an invocation `ago_seconds` ago would; returns (intent id, handle)."""
    start = datetime.now(UTC) - timedelta(seconds=ago_seconds)
    manager = FirestoreReservationManager(db, clock=FakeClock(start), ttl=TTL, policy=FAST_POLICY)
    client_intent_id = intent_id or unique("intent")
    acquisition = manager.acquire(
        ReservationRequest(tenant_id, account, client_intent_id, "AAPL", 190.0, "hash")
    )
    assert isinstance(acquisition, Acquired)
    return client_intent_id, acquisition.handle


def stuck(db: firestore.Client, tenant_id: str, account: str = "acct-1") -> str:
    """A lease taken an hour ago (TTL 10 min) and never released: its invocation died."""
    return reserve(db, tenant_id, account, ago_seconds=3600)[0]


def live(db: firestore.Client, tenant_id: str, account: str = "acct-1") -> str:
    """A lease taken just now: an invocation is still running."""
    return reserve(db, tenant_id, account)[0]


def released(
    db: firestore.Client, tenant_id: str, account: str = "acct-1", outcome: Outcome = Outcome.PLACED
) -> str:
    """A lease its invocation released with `outcome`."""
    intent_id, handle = reserve(db, tenant_id, account)
    handle.release(outcome, broker_order_id="paper-1" if outcome is Outcome.PLACED else None)
    return intent_id


def ids(result: Result) -> list[str]:
    """The client_intent_ids of a `reservations --json` answer."""
    assert result.exit_code == 0, result.output
    return sorted(row["client_intent_id"] for row in json.loads(result.stdout))


def switch_doc(db: firestore.Client, tenant_id: str | None = None) -> dict[str, Any] | None:
    ref = (
        db.collection("ops").document("execution_kill_switch")
        if tenant_id is None
        else db.collection("tenants", tenant_id, "ops").document("execution_kill_switch")
    )
    snap = ref.get()
    return snap.to_dict() if snap.exists else None


# -- Pub/Sub: a topic of the test's own, with a pull subscription to read what was sent -----------


@dataclass
class Topic:
    """A fresh intents topic on the emulator and a way to read back what reached it."""

    name: str
    path: str
    subscription: str
    publisher: PublisherClient
    subscriber: SubscriberClient

    def pull(self, count: int) -> list[bytes]:
        """The data of the first `count` messages to arrive (fails after 20 s)."""
        received: list[bytes] = []

        def enough() -> bool:
            try:
                response = self.subscriber.pull(
                    request={"subscription": self.subscription, "max_messages": 100}, timeout=5
                )
            except gexc.DeadlineExceeded:
                return False
            if response.received_messages:
                received.extend(m.message.data for m in response.received_messages)
                self.subscriber.acknowledge(
                    request={
                        "subscription": self.subscription,
                        "ack_ids": [m.ack_id for m in response.received_messages],
                    }
                )
            return len(received) >= count

        wait_until(enough, timeout=20, what=f"{count} message(s) on {self.name}")
        return received

    def pull_until_sentinel(self) -> list[bytes]:
        """Everything published before a sentinel we publish now (proves what was *not* sent)."""
        sentinel = f"sentinel-{uuid.uuid4().hex}".encode()
        self.publisher.publish(self.path, sentinel).result(timeout=30)
        received: list[bytes] = []
        while sentinel not in received:
            received.extend(self.pull(1))
        return received[: received.index(sentinel)]


@pytest.fixture
def topic(pubsub_emulator_host: str, firestore_project: str) -> Iterator[Topic]:
    publisher = PublisherClient()
    subscriber = SubscriberClient()
    name = unique("intents")
    path = publisher.topic_path(firestore_project, name)
    subscription = subscriber.subscription_path(firestore_project, f"{name}-pull")
    publisher.create_topic(request={"name": path})
    subscriber.create_subscription(request={"name": subscription, "topic": path})
    yield Topic(name, path, subscription, publisher, subscriber)
    subscriber.delete_subscription(request={"subscription": subscription})
    publisher.delete_topic(request={"topic": path})
    subscriber.close()


def intent_line(**overrides: Any) -> str:
    """One valid intent as a JSON line."""
    return make_intent(**overrides).model_dump_json(exclude_none=True)


def write_lines(tmp_path: Path, *lines: str) -> str:
    path = tmp_path / "intents.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


# -- publish --------------------------------------------------------------------------------------


def test_publish_sends_each_line_of_a_file_to_the_intents_topic(
    cli: Callable[..., Result], topic: Topic, tmp_path: Path
) -> None:
    lines = [intent_line(client_intent_id="pub-1"), intent_line(client_intent_id="pub-2")]

    result = cli("publish", write_lines(tmp_path, *lines), env={"INTENT_TOPIC": topic.name})

    assert result.exit_code == 0, result.output
    assert sorted(topic.pull(2)) == sorted(line.encode() for line in lines)
    assert "Published 2 of 2 intents" in result.stdout
    assert "pub-1" in result.stdout and "pub-2" in result.stdout


def test_publish_refuses_a_file_with_an_invalid_line_and_sends_nothing(
    cli: Callable[..., Result], topic: Topic, tmp_path: Path
) -> None:
    file = write_lines(tmp_path, intent_line(), '{"tenant_id": "t", "side": "hold"}', intent_line())

    result = cli("publish", file, env={"INTENT_TOPIC": topic.name})

    assert result.exit_code == 1
    assert "side: Input should be 'buy' or 'sell'" in result.stdout
    assert "1 of 3 lines are not valid trade intents; nothing was published" in result.stderr
    assert topic.pull_until_sentinel() == []


def test_publish_names_the_line_number_of_each_invalid_line(
    cli: Callable[..., Result], topic: Topic, tmp_path: Path
) -> None:
    file = write_lines(tmp_path, intent_line(), "", "not json", intent_line())

    result = cli("publish", file, "--json", env={"INTENT_TOPIC": topic.name})

    assert json.loads(result.stdout)["invalid"] == [
        {"line": 3, "reason": "not JSON: Expecting value: line 1 column 1 (char 0)"}
    ]


def test_publish_with_allow_invalid_sends_invalid_lines_as_they_are(
    cli: Callable[..., Result], topic: Topic, tmp_path: Path
) -> None:
    good = intent_line()

    result = cli(
        "publish",
        write_lines(tmp_path, good, "not json"),
        "--allow-invalid",
        env={"INTENT_TOPIC": topic.name},
    )

    assert result.exit_code == 0, result.output
    assert sorted(topic.pull(2)) == sorted([good.encode(), b"not json"])
    assert "1 of them invalid: expect dead letters" in result.stdout


INVALID_WITH_IDS = (
    '{"tenant_id": "tenant-find", "broker_account_id": "acct-find", '
    '"client_intent_id": "intent-find", "symbol": "AAPL", "side": "hold", "qty": 1}'
)
"""An invalid intent whose ids can still be read: the operator must be shown them."""


def test_publish_with_allow_invalid_shows_the_ids_and_reason_of_an_invalid_line(
    cli: Callable[..., Result], topic: Topic, tmp_path: Path
) -> None:
    file = write_lines(tmp_path, intent_line(), INVALID_WITH_IDS)

    result = cli("publish", file, "--allow-invalid", env={"INTENT_TOPIC": topic.name})

    assert result.exit_code == 0, result.output
    [row] = [line for line in result.stdout.splitlines() if line.lstrip("│ ").startswith("2 ")]
    assert "tenant-find" in row and "acct-find" in row and "intent-find" in row
    assert "side: Input should be 'buy' or 'sell'" in row
    assert "(invalid)" not in result.stdout


def test_publish_refusing_a_file_shows_the_ids_of_each_invalid_line(
    cli: Callable[..., Result], topic: Topic, tmp_path: Path
) -> None:
    file = write_lines(tmp_path, intent_line(), INVALID_WITH_IDS, "not json")

    text = cli("publish", file, env={"INTENT_TOPIC": topic.name})
    as_json = cli("publish", file, "--json", env={"INTENT_TOPIC": topic.name})

    [row] = [line for line in text.stdout.splitlines() if "intent-find" in line]
    assert "tenant-find" in row and "acct-find" in row and "side: Input should be" in row
    invalid = json.loads(as_json.stdout)["invalid"]
    assert invalid[0]["line"] == 2
    assert {key: invalid[0][key] for key in ("tenant_id", "broker_account_id")} == {
        "tenant_id": "tenant-find",
        "broker_account_id": "acct-find",
    }
    assert invalid[0]["client_intent_id"] == "intent-find"
    assert invalid[1] == {
        "line": 3,
        "reason": "not JSON: Expecting value: line 1 column 1 (char 0)",
    }


def test_publish_shows_only_ids_that_are_text_and_bounds_them(
    cli: Callable[..., Result], topic: Topic, tmp_path: Path
) -> None:
    line = json.dumps(
        {"tenant_id": 7, "broker_account_id": "a" * 5000, "client_intent_id": "x\x1b[2Jy"}
    )

    result = cli("publish", write_lines(tmp_path, line), "--json", env={"INTENT_TOPIC": topic.name})

    [invalid] = json.loads(result.stdout)["invalid"]
    assert "tenant_id" not in invalid
    assert len(invalid["broker_account_id"]) <= 200
    assert invalid["broker_account_id"].endswith("[cut: 5000 characters]")
    assert invalid["client_intent_id"] == "x\\x1b[2Jy"


def test_publish_reads_intents_from_stdin(cli: Callable[..., Result], topic: Topic) -> None:
    line = intent_line()

    result = cli("publish", "-", input=line + "\n", env={"INTENT_TOPIC": topic.name})

    assert result.exit_code == 0, result.output
    assert topic.pull(1) == [line.encode()]


def test_publish_builds_a_single_intent_from_options(
    cli: Callable[..., Result], topic: Topic
) -> None:
    result = cli(
        "publish",
        "--tenant",
        "tenant-o",
        "--account",
        "acct-o",
        "--symbol",
        "msft",
        "--side",
        "sell",
        "--qty",
        "3",
        "--limit-price",
        "410",
        "--intent-id",
        "opt-1",
        "--dry-run",
        env={"INTENT_TOPIC": topic.name},
    )

    assert result.exit_code == 0, result.output
    [data] = topic.pull(1)
    intent = parse_intent(data)
    assert (intent.tenant_id, intent.broker_account_id, intent.client_intent_id) == (
        "tenant-o",
        "acct-o",
        "opt-1",
    )
    assert (intent.symbol, intent.side, intent.qty, intent.order_type, intent.limit_price) == (
        "MSFT",
        "sell",
        3,
        "limit",
        410,
    )
    assert intent.dry_run is True
    assert intent.created_at is not None


def test_publish_to_a_missing_topic_names_the_command_that_creates_it(
    cli: Callable[..., Result], pubsub_emulator_host: str, tmp_path: Path
) -> None:
    result = cli(
        "publish", write_lines(tmp_path, intent_line()), env={"INTENT_TOPIC": "no-such-topic"}
    )

    assert result.exit_code == EXIT_UNREACHABLE
    assert "does not exist on the Pub/Sub emulator" in result.stderr
    assert "gcloud pubsub topics create no-such-topic" in result.stderr


def test_publish_fails_naming_the_fix_when_pubsub_is_not_running(
    cli: Callable[..., Result], tmp_path: Path
) -> None:
    dead = f"127.0.0.1:{free_loopback_port()}"

    result = cli(
        "publish", write_lines(tmp_path, intent_line()), env={"PUBSUB_EMULATOR_HOST": dead}
    )

    assert result.exit_code == EXIT_UNREACHABLE
    assert f"Cannot reach Pub/Sub at {dead} (PUBSUB_EMULATOR_HOST)" in result.stderr
    assert "Start the emulators" in result.stderr


# -- reservations ---------------------------------------------------------------------------------


def test_reservations_of_a_tenant_can_be_narrowed_to_one_account(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    mine = [live(db, "tenant-r", "acct-a"), released(db, "tenant-r", "acct-a")]
    live(db, "tenant-r", "acct-b")
    live(db, "tenant-other", "acct-a")

    result = cli("reservations", "--tenant", "tenant-r", "--account", "acct-a", "--json")

    assert ids(result) == sorted(mine)


def test_reservations_of_a_tenant_can_be_narrowed_to_one_status(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    done = released(db, "tenant-r")
    live(db, "tenant-r")

    result = cli("reservations", "--tenant", "tenant-r", "--status", "released", "--json")

    assert ids(result) == [done]


def test_reservations_without_a_tenant_lists_what_is_in_flight_in_every_tenant(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    in_flight = [live(db, "tenant-1"), live(db, "tenant-2"), stuck(db, "tenant-2")]
    released(db, "tenant-1")

    result = cli("reservations", "--json")

    assert ids(result) == sorted(in_flight)


def test_reservations_stuck_lists_only_leases_past_their_expiry(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    lapsed = stuck(db, "tenant-s")
    live(db, "tenant-s")
    released(db, "tenant-s")

    result = cli("reservations", "--stuck", "--json")

    assert ids(result) == [lapsed]


def test_reservations_stuck_can_be_narrowed_to_one_tenant(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    mine = stuck(db, "tenant-s")
    stuck(db, "tenant-other")

    result = cli("reservations", "--stuck", "--tenant", "tenant-s", "--json")

    assert ids(result) == [mine]


def test_reservations_table_marks_a_stuck_lease(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    lapsed = stuck(db, "tenant-t")

    result = cli("reservations", "--tenant", "tenant-t")

    assert result.exit_code == 0, result.output
    [row] = [line for line in result.stdout.splitlines() if lapsed in line]
    assert "STUCK" in row and "lapsed 50m" in row


def test_reservations_refuses_an_account_without_its_tenant(cli: Callable[..., Result]) -> None:
    result = cli("reservations", "--account", "acct-1")

    assert result.exit_code == EXIT_USAGE
    assert "account ids are per tenant" in result.output


# -- sweep ----------------------------------------------------------------------------------------


def test_sweep_dry_run_lists_lapsed_leases_and_changes_nothing(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    lapsed = stuck(db, "tenant-w")

    result = cli("sweep", "--dry-run")

    assert result.exit_code == 0, result.output
    assert lapsed in result.stdout
    assert "1 lapsed lease(s) would be expired" in result.stdout
    assert reservation(db, "tenant-w", lapsed)["status"] == "reserved"


def test_sweep_expires_lapsed_leases_and_leaves_live_ones(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    lapsed = stuck(db, "tenant-w")
    running = live(db, "tenant-w")

    result = cli("sweep", "--json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["expired"], report["errors"]) == (1, 0)
    assert report["expired_ids"] == [f"tenants/tenant-w/execution_reservations/{lapsed}"]
    doc = reservation(db, "tenant-w", lapsed)
    assert (doc["status"], doc["outcome"]) == ("expired", "expired")
    assert reservation(db, "tenant-w", running)["status"] == "reserved"


# -- kill-switch ----------------------------------------------------------------------------------


def test_kill_switch_on_records_who_and_why_on_the_global_document(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    before = datetime.now(UTC)

    result = cli("kill-switch", "on", "--reason", "broker outage", "--by", "alice")

    assert result.exit_code == 0, result.output
    doc = switch_doc(db)
    assert doc is not None
    assert (doc["enabled"], doc["reason"], doc["updated_by"]) == (True, "broker outage", "alice")
    assert before - timedelta(seconds=1) <= doc["updated_at"] <= datetime.now(UTC)
    assert "Kill switch ON for global" in result.stdout


def test_kill_switch_on_for_a_tenant_writes_only_that_tenants_document(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    result = cli("kill-switch", "on", "--tenant", "tenant-k", "--reason", "runaway strategy")

    assert result.exit_code == 0, result.output
    assert (switch_doc(db, "tenant-k") or {}).get("enabled") is True
    assert switch_doc(db) is None


def test_kill_switch_records_the_shell_user_when_no_name_is_given(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    cli("kill-switch", "on", "--reason", "drill", env={"USER": "ops-oncall"})

    assert (switch_doc(db) or {}).get("updated_by") == "ops-oncall"


def test_kill_switch_off_clears_it_and_records_who_and_why(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    cli("kill-switch", "on", "--tenant", "tenant-k", "--reason", "incident", "--by", "alice")

    result = cli(
        "kill-switch", "off", "--tenant", "tenant-k", "--reason", "resolved", "--by", "bob"
    )

    assert result.exit_code == 0, result.output
    doc = switch_doc(db, "tenant-k") or {}
    assert (doc["enabled"], doc["reason"], doc["updated_by"]) == (False, "resolved", "bob")


def test_kill_switch_on_refuses_to_run_without_a_reason(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    result = cli("kill-switch", "on", "--reason", " ")

    assert result.exit_code == EXIT_USAGE
    assert switch_doc(db) is None


def test_kill_switch_status_lists_the_global_and_each_tenant_switch(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    cli("kill-switch", "on", "--tenant", "tenant-a", "--reason", "margin call", "--by", "carol")
    cli("kill-switch", "off", "--tenant", "tenant-b", "--by", "dave")

    result = cli("kill-switch", "status", "--json")

    assert result.exit_code == 0, result.output
    rows = {row["tenant_id"]: row for row in json.loads(result.stdout)}
    assert set(rows) == {None, "tenant-a", "tenant-b"}
    assert (rows["tenant-a"]["enabled"], rows["tenant-a"]["reason"]) == (True, "margin call")
    assert rows[None]["enabled"] is False and rows["tenant-b"]["enabled"] is False


def test_kill_switch_stamps_the_time_of_the_injected_clock(
    firestore_project: str, db: firestore.Client
) -> None:
    clock = FakeClock(datetime(2026, 3, 2, 9, 30, tzinfo=UTC))
    context = CliContext(project_option=firestore_project, clock=clock, db_client=db)

    result = CliRunner().invoke(
        app, ["kill-switch", "on", "--reason", "drill", "--by", "eve"], obj=context
    )

    assert result.exit_code == 0, result.output
    assert (switch_doc(db) or {}).get("updated_at") == clock()


def test_the_engine_halts_a_tenant_whose_switch_the_cli_turned_on(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    cli("kill-switch", "on", "--tenant", "tenant-h", "--reason", "halt drill")
    intent = make_intent(tenant_id="tenant-h", created_at=datetime.now(UTC))

    result = emulator_service(db, system_clock, settings=fast_settings()).engine.execute_intent(
        intent
    )

    assert (result.outcome, result.reason) == (Outcome.HALTED, "kill_switch_tenant")


# -- status ---------------------------------------------------------------------------------------


def test_status_shows_an_engaged_kill_switch_with_its_reason(cli: Callable[..., Result]) -> None:
    cli("kill-switch", "on", "--reason", "market halt", "--by", "alice")

    result = cli("status")

    assert result.exit_code == 0, result.output
    assert "HALTED: a kill switch is on" in result.stdout
    [row] = [line for line in result.stdout.splitlines() if "market halt" in line]
    assert "global" in row and "ON" in row and "alice" in row


def test_status_shows_the_agent_mode_of_this_environment(cli: Callable[..., Result]) -> None:
    result = cli("status", env={"AGENT_MODE": "OBSERVE"})

    assert result.exit_code == 0, result.output
    assert "AGENT_MODE OBSERVE" in result.stdout


def test_status_counts_live_and_stuck_reservations_per_account(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    db.collection("tenants", "tenant-f", "accounts").document("acct-1").set(
        {"max_inflight_usd": 5000.0}
    )
    live(db, "tenant-f", "acct-1")
    live(db, "tenant-f", "acct-1")
    stuck(db, "tenant-f", "acct-1")
    live(db, "tenant-f", "acct-2")
    released(db, "tenant-f", "acct-2")

    result = cli("status", "--json")

    assert result.exit_code == 0, result.output
    in_flight = {row["broker_account_id"]: row for row in json.loads(result.stdout)["in_flight"]}
    assert (in_flight["acct-1"]["live"], in_flight["acct-1"]["stuck"]) == (2, 1)
    assert in_flight["acct-1"]["live_usd"] == 380.0
    assert in_flight["acct-1"]["max_inflight_usd"] == 5000.0
    assert (in_flight["acct-2"]["live"], in_flight["acct-2"]["stuck"]) == (1, 0)


def test_status_lists_recent_outcomes_newest_first(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    first = released(db, "tenant-o", outcome=Outcome.REJECTED)
    second = released(db, "tenant-o", outcome=Outcome.PLACED)
    live(db, "tenant-o")

    result = cli("status", "--json")

    outcomes = json.loads(result.stdout)["recent_outcomes"]
    assert [(row["client_intent_id"], row["outcome"]) for row in outcomes] == [
        (second, "placed"),
        (first, "rejected"),
    ]


def test_status_lists_recent_dead_letters_with_their_reason(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    FirestoreDeadLetters(db, clock=system_clock, policy=FAST_POLICY).record(
        Delivery("4242", None, b"not json", {}), "InvalidIntentError: not JSON"
    )

    result = cli("status")

    assert result.exit_code == 0, result.output
    [row] = [line for line in result.stdout.splitlines() if "4242" in line]
    assert "InvalidIntentError: not JSON" in row


# -- failures that name their fix -----------------------------------------------------------------

LONG_DEADLINE = 60
"""FIRESTORE_TIMEOUT_SECONDS (its bound) where a test tells a command that gives up at once, or
within its --timeout, from one that waits out the store's deadline: 30 s of slack under load."""


def test_a_command_fails_at_once_naming_the_fix_when_the_firestore_emulator_is_not_running(
    cli: Callable[..., Result],
) -> None:
    dead = f"127.0.0.1:{free_loopback_port()}"
    started = time.monotonic()

    result = cli(
        "reservations",
        env={"FIRESTORE_EMULATOR_HOST": dead, "FIRESTORE_TIMEOUT_SECONDS": str(LONG_DEADLINE)},
    )

    assert result.exit_code == EXIT_UNREACHABLE == 3  # not Click's 2
    # Not a speed figure: a command that waited out its deadline would take LONG_DEADLINE.
    assert time.monotonic() - started < LONG_DEADLINE / 2
    assert f"Cannot reach Firestore at {dead} (FIRESTORE_EMULATOR_HOST)" in result.stderr
    assert "Start the emulators" in result.stderr
    assert "unset FIRESTORE_EMULATOR_HOST to use project" in result.stderr


class SilentServer:
    """Accepts TCP connections and never answers: a store that hangs rather than refuses."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            self._held.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()
        for conn in self._held:
            conn.close()


def test_a_command_gives_up_within_its_timeout_when_firestore_does_not_answer(
    cli: Callable[..., Result],
) -> None:
    silent = SilentServer()
    started = time.monotonic()
    try:
        result = cli(
            "--timeout",
            "1",
            "status",
            env={
                "FIRESTORE_EMULATOR_HOST": silent.address,
                "FIRESTORE_TIMEOUT_SECONDS": str(LONG_DEADLINE),
            },
        )
    finally:
        silent.close()

    assert result.exit_code == EXIT_UNREACHABLE
    # Not a speed figure: ignoring --timeout would wait out the LONG_DEADLINE setting.
    assert time.monotonic() - started < LONG_DEADLINE / 2
    assert f"Cannot reach Firestore at {silent.address}" in result.stderr


def test_without_a_project_or_emulators_the_error_names_the_variable_to_set() -> None:
    result = CliRunner().invoke(
        app,
        ["status"],
        env={
            "GOOGLE_CLOUD_PROJECT": None,
            "GCLOUD_PROJECT": None,
            "FIRESTORE_EMULATOR_HOST": None,
            "PUBSUB_EMULATOR_HOST": None,
        },
    )

    assert result.exit_code == EXIT_UNREACHABLE
    assert "set GOOGLE_CLOUD_PROJECT (or pass --project)" in result.stderr


# -- the entry point ------------------------------------------------------------------------------


def test_python_dash_m_execution_runs_the_command_line_on_the_emulators(
    firestore_project: str, db: firestore.Client
) -> None:
    lapsed = stuck(db, "tenant-m")
    env = {**os.environ, **WIDE, "GOOGLE_CLOUD_PROJECT": firestore_project}

    run = subprocess.run(
        [sys.executable, "-m", "execution", "reservations", "--stuck"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert run.returncode == 0, run.stderr
    assert lapsed in run.stdout


def test_importing_main_loads_neither_typer_nor_rich() -> None:
    code = (
        "import sys, main; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'typer', 'rich'} "
        "or m == 'execution.cli' or m.startswith('execution.cli.')))"
    )

    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


# -- kill switch --json ---------------------------------------------------------------------------


def test_kill_switch_on_and_off_answer_json_with_the_document_they_wrote(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    on = cli(
        "kill-switch", "on", "--tenant", "tenant-j", "--reason", "drill", "--by", "ops", "--json"
    )
    off = cli("kill-switch", "off", "--tenant", "tenant-j", "--by", "ops", "--json")

    assert on.exit_code == 0 and off.exit_code == 0, on.output + off.output
    on_answer, off_answer = json.loads(on.stdout), json.loads(off.stdout)
    on_row, off_row = on_answer["switch"], off_answer["switch"]
    assert on_answer["cancel_open"] is None
    assert on_row["path"] == off_row["path"] == "tenants/tenant-j/ops/execution_kill_switch"
    assert (on_row["enabled"], on_row["reason"], on_row["updated_by"]) == (True, "drill", "ops")
    assert off_row["enabled"] is False
    stored = switch_doc(db, "tenant-j") or {}
    assert (stored["enabled"], stored["updated_by"]) == (False, "ops")


# -- malformed documents: listed with their problem, never a crash -------------------------------


def damage(db: firestore.Client, tenant_id: str, client_intent_id: str, **fields: Any) -> None:
    """Overwrite fields of a stored reservation (an operator's hand edit, a bad migration)."""
    db.collection("tenants", tenant_id, "execution_reservations").document(client_intent_id).update(
        fields
    )


def test_reservations_lists_a_malformed_document_with_its_problem_beside_the_good_ones(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    good = live(db, "tenant-m")
    bad = live(db, "tenant-m")
    damage(db, "tenant-m", bad, amount_usd="lots", attempt="x")

    result = cli("reservations", "--tenant", "tenant-m", "--json")

    assert ids(result) == sorted([good, bad])
    rows = {row["client_intent_id"]: row for row in json.loads(result.stdout)}
    assert rows[good]["problem"] is None
    problem = rows[bad]["problem"]
    assert "amount_usd" in problem and "attempt" in problem
    assert "lots" not in problem  # the fields and rules are named, a stored value never quoted
    assert rows[bad]["tenant_id"] == "tenant-m"


def test_reservations_table_marks_a_malformed_document(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    bad = live(db, "tenant-m2")
    damage(db, "tenant-m2", bad, expires_at="tomorrow")

    result = cli("reservations", "--tenant", "tenant-m2")

    assert result.exit_code == 0, result.output
    [row] = [line for line in result.stdout.splitlines() if bad in line]
    assert "MALFORMED" in row


def test_status_shows_no_budget_for_an_account_whose_budget_is_malformed(
    cli: Callable[..., Result], db: firestore.Client
) -> None:
    db.collection("tenants", "tenant-b", "accounts").document("acct-1").set(
        {"max_inflight_usd": "5k"}
    )
    live(db, "tenant-b", "acct-1")

    result = cli("status", "--json")

    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)["in_flight"]
    assert (row["broker_account_id"], row["live"], row["max_inflight_usd"]) == ("acct-1", 1, None)
