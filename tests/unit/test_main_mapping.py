"""`main.py`'s answers, fast: every outcome and exception mapped to ack, retry or dead letter.

The entry points are served by functions-framework in process (`create_app`, the app the
`functions-framework` command serves), fed the golden requests of `tests/data/`, with fakes of our
own ports behind them (engine, dead letters, sweeper, reconciler): no emulator. Pub/Sub reads a
2xx as ack and anything else as "deliver again"; Cloud Scheduler reads the JSON report.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from flask.testing import FlaskClient
from functions_framework import create_app

from execution.bootstrap import Service
from execution.errors import (
    ExecutionError,
    InvalidIntentError,
    PermanentError,
    RetryableError,
    StoreUnavailableError,
)
from execution.intake import Delivery
from execution.models import ExecutionResult, Outcome, TradeIntent
from execution.settings import Settings
from tests.support.events import binary_headers, cloud_event, golden
from tests.unit.fakes import logged

MAIN = Path(__file__).resolve().parents[2] / "main.py"
GOLDEN_PUBLISH_TIME = datetime(2026, 1, 5, 14, 30, 0, 123000, tzinfo=UTC)
HOSTILE_PUSH_BODIES = [
    "push_message_string",
    "push_no_message_id",
    "push_body_array",
    "push_body_string",
    "push_no_data",
]


def subclasses(root: type[ExecutionError]) -> list[type[ExecutionError]]:
    """Every class under `root` in errors.py's tree, `root` excluded."""
    found = []
    for child in root.__subclasses__():
        found += [child, *subclasses(child)]
    return found


# -- fakes of our own ports ------------------------------------------------------------------


@dataclass
class FakeEngine:
    """Answers every intent with `result`, or raises `error`; records what it was given."""

    result: Outcome = Outcome.PLACED
    error: BaseException | None = None
    calls: list[tuple[TradeIntent, datetime | None]] = field(default_factory=list)

    def execute_intent(
        self, intent: TradeIntent, *, published_at: datetime | None = None
    ) -> ExecutionResult:
        self.calls.append((intent, published_at))
        if self.error is not None:
            raise self.error
        return ExecutionResult.for_intent(intent, self.result, attempt=1)


@dataclass
class FakeDeadLetters:
    """Keeps dead letters by id; raises `error` instead when set (a store outage)."""

    error: BaseException | None = None
    letters: dict[str, tuple[Delivery, str]] = field(default_factory=dict)

    def record(self, delivery: Delivery, reason: str) -> str:
        if self.error is not None:
            raise self.error
        self.letters[delivery.dead_letter_id] = (delivery, reason)
        return delivery.dead_letter_id


@dataclass
class FakeReport:
    kind: str

    def as_dict(self) -> dict[str, Any]:
        return {"report": self.kind}


class FakeSweeper:
    def sweep(self) -> FakeReport:
        return FakeReport("sweep")


class FakeReconciler:
    def reconcile(self) -> FakeReport:
        return FakeReport("reconcile")


def fake_service(engine: FakeEngine, dead_letters: FakeDeadLetters) -> Service:
    return Service(
        settings=Settings(project="demo-unit"),
        engine=engine,  # type: ignore[arg-type]
        sweeper=FakeSweeper(),  # type: ignore[arg-type]
        reconciler=FakeReconciler(),  # type: ignore[arg-type]
        dead_letters=dead_letters,
    )


# -- the entry points, served ------------------------------------------------------------------


@dataclass
class Served:
    """One entry point in a functions-framework app, and the `main` module that app loaded."""

    client: FlaskClient
    module: ModuleType


def serve(target: str, signature_type: str) -> Served:
    """`target` as `functions-framework --target TARGET --source main.py` serves it."""
    previous = sys.modules.get("main")
    app = create_app(target, str(MAIN), signature_type)
    module = sys.modules["main"]  # create_app loads main.py afresh as `main`
    if previous is not None:
        sys.modules["main"] = previous
    return Served(app.test_client(), module)


@pytest.fixture(scope="module")
def apps() -> dict[str, Served]:
    return {
        "push": serve("execute_intent_push", "http"),
        "event": serve("execute_intent", "cloudevent"),
        "sweep": serve("sweep_reservations", "http"),
        "reconcile": serve("reconcile_orders", "http"),
    }


@dataclass
class Rig:
    apps: dict[str, Served]
    engine: FakeEngine
    dead_letters: FakeDeadLetters

    def push(self, body: bytes, method: str = "POST") -> int:
        answer = self.apps["push"].client.open("/", method=method, data=body)
        return answer.status_code

    def push_golden(self, name: str = "pubsub_push") -> int:
        return self.push(json.dumps(golden(name)).encode())

    def send_event(self, event_type: str | None = None) -> int:
        event = golden("pubsub_cloud_event")
        ce = cloud_event(event["data"], event_type=event_type or event["attributes"]["type"])
        body = json.dumps(event["data"]).encode()
        answer = self.apps["event"].client.post("/", data=body, headers=binary_headers(ce))
        return answer.status_code

    def schedule(self, name: str, method: str = "POST") -> tuple[int, Any]:
        request = golden("scheduler_request")
        answer = self.apps[name].client.open(
            request["path"], method=method, headers=request["headers"], data=request["body"]
        )
        return answer.status_code, answer.get_json(silent=True)


@pytest.fixture
def rig(apps: dict[str, Served], monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    engine, dead_letters = FakeEngine(), FakeDeadLetters()
    service = fake_service(engine, dead_letters)
    for served in apps.values():
        monkeypatch.setattr(served.module, "_service", service)
    yield Rig(apps, engine, dead_letters)


# -- ack: the engine's answers -----------------------------------------------------------------


@pytest.mark.parametrize("outcome", [o for o in Outcome if o not in {"exception", "expired"}])
def test_every_outcome_the_engine_returns_is_acked_without_a_dead_letter(
    rig: Rig, outcome: Outcome, caplog: pytest.LogCaptureFixture
) -> None:
    rig.engine.result = outcome
    caplog.set_level(logging.INFO, logger="execution.main")

    status = rig.push_golden()

    [ack] = logged(caplog.records, "exec.delivery.acked")
    assert status == 200
    assert ack["outcome"] == outcome.value
    assert rig.dead_letters.letters == {}


@pytest.mark.parametrize("entry_point", ["push", "event"])
def test_the_golden_delivery_reaches_the_engine_as_its_intent_and_publish_time(
    rig: Rig, entry_point: str
) -> None:
    status = rig.push_golden() if entry_point == "push" else rig.send_event()

    [(intent, published_at)] = rig.engine.calls
    assert status == 200
    assert (intent.tenant_id, intent.client_intent_id) == ("tenant-golden", "intent-golden")
    assert published_at == GOLDEN_PUBLISH_TIME


# -- retry: a non-2xx answer -------------------------------------------------------------------


@pytest.mark.parametrize("error", subclasses(RetryableError), ids=lambda e: e.__name__)
def test_every_retryable_error_is_answered_500_and_never_dead_lettered(
    rig: Rig, error: type[RetryableError], caplog: pytest.LogCaptureFixture
) -> None:
    rig.engine.error = error("wait")
    caplog.set_level(logging.INFO, logger="execution.main")

    statuses = [rig.push_golden(), rig.send_event()]

    retries = logged(caplog.records, "exec.delivery.retry")
    assert statuses == [500, 500]
    assert [r["error"] for r in retries] == [f"{error.__name__}: wait"] * 2
    assert rig.dead_letters.letters == {}


def test_an_unexpected_exception_is_retried_rather_than_acked(rig: Rig) -> None:
    rig.engine.error = KeyError("a bug of ours")

    statuses = [rig.push_golden(), rig.send_event()]

    assert statuses == [500, 500]
    assert rig.dead_letters.letters == {}


def test_a_store_outage_while_dead_lettering_is_retried(rig: Rig) -> None:
    rig.dead_letters.error = StoreUnavailableError("dead letter write: unavailable")

    statuses = [rig.push_golden(name) for name in HOSTILE_PUSH_BODIES]

    assert statuses == [500] * len(HOSTILE_PUSH_BODIES)
    assert rig.engine.calls == []


# -- dead letter, then ack ---------------------------------------------------------------------


@pytest.mark.parametrize("error", subclasses(PermanentError), ids=lambda e: e.__name__)
def test_every_permanent_error_is_dead_lettered_with_its_class_and_acked(
    rig: Rig, error: type[PermanentError]
) -> None:
    rig.engine.error = error("never valid")

    status = rig.push_golden()

    [(delivery, reason)] = rig.dead_letters.letters.values()
    assert status == 200
    assert reason == f"{error.__name__}: never valid"
    assert delivery.message_id == golden("pubsub_push")["message"]["messageId"]


@pytest.mark.parametrize("name", HOSTILE_PUSH_BODIES)
def test_every_hostile_push_body_is_dead_lettered_and_acked_without_reaching_the_engine(
    rig: Rig, name: str
) -> None:
    status = rig.push_golden(name)

    [(_, reason)] = rig.dead_letters.letters.values()
    assert status == 200
    assert reason.startswith(InvalidIntentError.__name__)
    assert rig.engine.calls == []


@pytest.mark.parametrize("body", [b"", b"{not json", b"\xff\xfe", b"[" * 100_000, b"9" * 5000])
def test_a_push_body_that_is_not_a_json_envelope_is_dead_lettered_under_its_hash(
    rig: Rig, body: bytes
) -> None:
    status = rig.push(body)

    [(delivery, _)] = rig.dead_letters.letters.values()
    assert status == 200
    assert delivery.data == body
    assert delivery.dead_letter_id.startswith("payload-")


def test_a_cloud_event_of_another_type_is_dead_lettered_and_acked(rig: Rig) -> None:
    status = rig.send_event("google.cloud.storage.object.v1.finalized")

    [(_, reason)] = rig.dead_letters.letters.values()
    assert status == 200
    assert "google.cloud.storage.object.v1.finalized" in reason
    assert rig.engine.calls == []


# -- not a delivery at all ----------------------------------------------------------------------


def test_the_push_entry_point_answers_only_post(rig: Rig) -> None:
    status = rig.push(b"", method="GET")

    assert status == 405
    assert (rig.engine.calls, rig.dead_letters.letters) == ([], {})


# -- Cloud Scheduler ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sweep", "reconcile"])
def test_a_scheduled_call_answers_its_report_as_json(rig: Rig, name: str) -> None:
    status, report = rig.schedule(name)

    assert status == 200
    assert report == {"report": name}


@pytest.mark.parametrize("name", ["sweep", "reconcile"])
def test_a_scheduled_function_refuses_anything_but_post(rig: Rig, name: str) -> None:
    status, report = rig.schedule(name, method="GET")

    assert status == 405
    assert report == {"error": "use POST"}
