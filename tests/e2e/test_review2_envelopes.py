"""Second review: push envelopes as a forger or a misconfigured proxy would send them.

`execute_intent_push` runs as deployed (`functions-framework` on `main.py`, paper broker, the
Firestore emulator) and gets raw HTTP requests. What a reviewer tried: a valid push body under
every content type a proxy might set (a form type makes a web framework parse, and so consume,
the body before the function reads it); an envelope that writes `message` or `data` twice, so
that which intent runs depends on the reader; a push subscription pointed at the CloudEvent
function (`execute_intent`) and a structured CloudEvent posted to the push function.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.cloud import firestore

from devtools.functions_server import FunctionsServer
from tests.support.builders import unique
from tests.support.events import encode, intent_payload, message, push_body
from tests.support.servers import EVENTARC_ENTRY_POINT, PUSH_ENTRY_POINT, paper_intent_server
from tests.support.waiting import wait_until

TENANT = "tenant-review2-envelopes"


def running(
    entry_point: tuple[str, str], project: str, host: str, tmp: pytest.TempPathFactory
) -> Iterator[FunctionsServer]:
    """The entry point as deployed, once it has answered a first push (a cold instance's first
    Firestore write can outlast its deadline)."""
    log_path = Path(tmp.mktemp("functions")) / f"{entry_point[0]}.log"
    functions = paper_intent_server(project, host, log_path, entry_point)
    functions.start()
    warm_up = push_body(message(b"warm-up", unique("warm")))
    wait_until(
        lambda: functions.post(body=warm_up)[0] == 200,
        timeout=60,
        what=f"{entry_point[0]}'s first answer",
        interval=0.5,
    )
    yield functions
    functions.kill()


@pytest.fixture(scope="module")
def server(
    firestore_project: str, firestore_emulator_host: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FunctionsServer]:
    yield from running(
        PUSH_ENTRY_POINT, firestore_project, firestore_emulator_host, tmp_path_factory
    )


@pytest.fixture(scope="module")
def event_server(
    firestore_project: str, firestore_emulator_host: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FunctionsServer]:
    yield from running(
        EVENTARC_ENTRY_POINT, firestore_project, firestore_emulator_host, tmp_path_factory
    )


def outcome(db: firestore.Client, payload: dict[str, Any]) -> str | None:
    ref = db.collection("tenants", payload["tenant_id"], "execution_reservations")
    snap = ref.document(payload["client_intent_id"]).get()
    return snap.get("outcome") if snap.exists else None


@pytest.mark.parametrize(
    "content_type",
    [
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=xyz",
        "text/plain; charset=latin-1",
        "application/octet-stream",
        None,
    ],
)
def test_a_valid_push_under_any_content_type_executes_once(
    server: FunctionsServer, db: firestore.Client, content_type: str | None
) -> None:
    payload = intent_payload(TENANT)
    headers = {"Content-Type": content_type} if content_type else {"X-No-Content-Type": "1"}

    status, _ = server.post(body=push_body(message(payload, unique("m"))), headers=headers)

    assert status == 200
    assert outcome(db, payload) == "placed"


def test_a_push_that_writes_the_message_data_twice_is_dead_lettered_never_executed(
    server: FunctionsServer, db: firestore.Client
) -> None:
    small, large = intent_payload(TENANT, qty=1), intent_payload(TENANT, qty=1000)
    message_id = unique("m")
    first = json.dumps({"data": encode(small), "messageId": message_id})
    body = f'{{"message": {first[:-1]}, "data": "{encode(large)}"}}, "subscription": "s"}}'

    status, _ = server.post(body=body.encode())

    assert status == 200
    assert (outcome(db, small), outcome(db, large)) == (None, None)
    assert "more than once" in dead_letter_holding(db, "more than once")


def dead_letter_holding(db: firestore.Client, words: str) -> str:
    """The reasons of the dead letters that hold `words` (their ids are the body's hash)."""
    reasons = [
        str((snap.to_dict() or {}).get("reason"))
        for snap in db.collection("execution_dead_letters").stream()
    ]
    return " | ".join(reason for reason in reasons if words in reason)


def test_a_push_subscription_pointed_at_the_cloud_event_function_still_executes_once(
    event_server: FunctionsServer, db: firestore.Client
) -> None:
    # A deploy mix-up: a plain push subscription (no `ce-*` headers) to `execute_intent`. A 400
    # would have Pub/Sub deliver it again and again; it must be answered as the intent it is.
    payload = intent_payload(TENANT)
    message_id = unique("m")

    status, _ = event_server.post(body=push_body(message(payload, message_id)))
    again, _ = event_server.post(body=push_body(message(payload, message_id)))

    assert (status, again) == (200, 200)
    assert outcome(db, payload) == "placed"


def test_a_structured_cloud_event_pushed_to_the_push_function_is_dead_lettered_not_retried(
    server: FunctionsServer, db: firestore.Client
) -> None:
    # The other mix-up: Eventarc's structured CloudEvent (data under `data`) POSTed to the push
    # function, which finds no `message` at the top: a dead letter, never an order or a 400.
    payload = intent_payload(TENANT)
    event = {
        "specversion": "1.0",
        "type": "google.cloud.pubsub.topic.v1.messagePublished",
        "source": "//pubsub.googleapis.com/projects/demo/topics/trade-intents",
        "id": unique("ce"),
        "data": {"message": message(payload, unique("m")), "subscription": "s"},
    }

    status, _ = server.post(
        body=json.dumps(event).encode(), headers={"Content-Type": "application/cloudevents+json"}
    )

    assert status == 200
    assert outcome(db, payload) is None
    assert "envelope must be" in dead_letter_holding(db, "its message is absent")
