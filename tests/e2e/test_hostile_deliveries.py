"""Hostile deliveries at the real boundary: raw push bodies and CloudEvents POSTed to a server.

Both intent entry points run as deployed (`functions-framework` on `main.py`, paper broker, the
Firestore emulator): `execute_intent_push` gets raw push bodies (`server`), `execute_intent`
binary-mode CloudEvents as Eventarc sends them (`event_server`). Every delivery here can never
become a valid intent, so each must be answered 200 (ack) with a dead letter that says why, never
400 or 500 (Pub/Sub would deliver it again and again, and nothing would say why).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from google.cloud import firestore

from devtools.functions_server import FunctionsServer
from tests.support.builders import unique
from tests.support.events import (
    ABSENT,
    binary_headers,
    cloud_event,
    encode,
    golden,
    intent_payload,
    message,
    push_body,
)
from tests.support.servers import (
    EVENTARC_ENTRY_POINT,
    paper_intent_server,
    warm_push_server_fixture,
)
from tests.support.waiting import wait_until

DEAD_LETTERS = "execution_dead_letters"
REASON_MAX_CHARS = 2000


server = warm_push_server_fixture()


@pytest.fixture(scope="module")
def event_server(
    firestore_project: str, firestore_emulator_host: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FunctionsServer]:
    log_path = Path(tmp_path_factory.mktemp("functions")) / "execute_intent_event.log"
    functions = paper_intent_server(
        firestore_project, firestore_emulator_host, log_path, EVENTARC_ENTRY_POINT
    )
    functions.start()
    envelope = {"message": message(b"warm-up", unique("warm")), "subscription": "s"}
    wait_until(
        lambda: send_event(functions, envelope) == 200,
        timeout=60,
        what="the CloudEvent server's first answer",
        interval=0.5,
    )
    yield functions
    functions.kill()


def intent(**overrides: Any) -> dict[str, Any]:
    return intent_payload("tenant-hostile", **overrides)


def push(server: FunctionsServer, message_body: Any) -> int:
    status, _ = server.post(body=push_body(message_body))
    return status


def send_event(server: FunctionsServer, data: Any, **event: Any) -> int:
    """POST `data` as a binary-mode CloudEvent (how Eventarc delivers to a 2nd gen function)."""
    headers = binary_headers(cloud_event(data, **event))
    status, _ = server.post(body=json.dumps(data).encode(), headers=headers)
    return status


def dead_letter(db: firestore.Client, doc_id: str) -> dict[str, Any] | None:
    snap = db.collection(DEAD_LETTERS).document(doc_id).get()
    return snap.to_dict() if snap.exists else None


def dead_letters_holding(db: firestore.Client, marker: str) -> list[dict[str, Any]]:
    """Dead letters whose stored payload contains `marker` (ids we cannot know beforehand)."""
    found = []
    for snap in db.collection(DEAD_LETTERS).stream():
        doc = snap.to_dict() or {}
        if marker in str(doc.get("data")):
            found.append({**doc, "id": snap.id})
    return found


def reservation(db: firestore.Client, payload: dict[str, Any]) -> firestore.DocumentSnapshot:
    ref = db.collection("tenants", payload["tenant_id"], "execution_reservations")
    return ref.document(payload["client_intent_id"]).get()


def reservation_exists(db: firestore.Client, payload: dict[str, Any]) -> bool:
    return bool(reservation(db, payload).exists)


def assert_bounded_and_printable(letter: dict[str, Any]) -> None:
    assert len(letter["reason"]) <= REASON_MAX_CHARS
    assert letter["reason"].isprintable()


# -- #13.1: payloads that crashed the parser or the dead-letter write --------------------------

NESTED = 3000


def deeply_nested_metadata() -> bytes:
    start = '{"tenant_id": "tenant-hostile", "metadata": '
    return (start + '{"a": ' * NESTED + "1" + "}" * NESTED + "}").encode()


HOSTILE_PAYLOADS: dict[str, tuple[bytes | dict[str, Any], str]] = {
    "metadata nested 3000 deep": (deeply_nested_metadata(), "nest"),
    "qty with 5000 digits": (
        b'{"tenant_id": "tenant-hostile", "qty": ' + b"7" * 5000 + b"}",
        "digits",
    ),
    "created_at at year 1 with +23:59": (
        intent(created_at="0001-01-01T00:00:00+23:59"),
        "created_at",
    ),
    "created_at at year 9999 with -23:59": (
        intent(created_at="9999-12-31T23:59:59-23:59"),
        "created_at",
    ),
    "an unknown field with a 1.1 MB name": ({**intent(), "x" * 1_100_000: 1}, "bytes"),
    "an unknown field with a 60 kB name": ({**intent(), "y" * 60_000: 1}, "Extra inputs"),
    "qty true": (intent(qty=True), "qty"),
    "qty a string": (intent(qty="7"), "qty"),
    "qty in exponent form as a string": (intent(qty="1e2"), "qty"),
    "limit_price a string": (intent(limit_price="150"), "limit_price"),
    "notional_usd a bool": (intent(notional_usd=True), "notional_usd"),
    "symbol with a long s": (intent(symbol="\u017fpy"), "symbol"),
    "symbol with a dotless i": (intent(symbol="\u0131bm"), "symbol"),
    "symbol as a ligature": (intent(symbol="\ufb00"), "symbol"),
}


@pytest.mark.parametrize("label", list(HOSTILE_PAYLOADS))
def test_a_hostile_payload_is_acked_and_dead_lettered_with_a_bounded_reason(
    server: FunctionsServer, db: firestore.Client, label: str
) -> None:
    payload, reason_part = HOSTILE_PAYLOADS[label]
    message_id = unique("m")

    status = push(server, message(payload, message_id))

    letter = dead_letter(db, message_id)
    assert status == 200, label
    assert letter is not None, label
    assert reason_part in letter["reason"], letter["reason"][:300]
    assert_bounded_and_printable(letter)
    if isinstance(payload, dict) and "client_intent_id" in payload:
        assert not reservation_exists(db, payload)


def test_a_bad_payload_with_a_reserved_attribute_name_keeps_its_attributes_encoded(
    server: FunctionsServer, db: firestore.Client
) -> None:
    message_id = unique("m")
    attributes = {"__meta__": "one", "a.b`c": "two", "": "three", "ok": "four"}

    status = push(server, message(b"{not json", message_id, attributes=attributes))

    letter = dead_letter(db, message_id)
    assert status == 200
    assert letter is not None
    assert sorted(letter["attributes"].values()) == ["four", "one", "three", "two"]
    assert letter["attributes"]["ok"] == "four"
    assert "__meta__" not in letter["attributes"]


def test_a_dead_letter_keeps_a_bounded_excerpt_of_a_large_payload_and_its_hash(
    server: FunctionsServer, db: firestore.Client
) -> None:
    message_id = unique("m")
    payload = b'{"junk": "' + b"z" * 900_000 + b'"}'

    status = push(server, message(payload, message_id))

    letter = dead_letter(db, message_id)
    assert status == 200
    assert letter is not None
    assert letter["truncated"] is True
    assert letter["data_sha256"] == hashlib.sha256(payload).hexdigest()
    assert letter["data_bytes"] == len(payload)
    assert len(letter["data"]) <= 100_000


# -- #13.2: broken envelopes ------------------------------------------------------------------


def test_a_cloud_event_whose_message_is_a_string_is_acked_and_dead_lettered(
    event_server: FunctionsServer, db: firestore.Client
) -> None:
    marker = unique("string-message")

    status = send_event(event_server, {"message": marker, "subscription": "s"})

    [letter] = dead_letters_holding(db, marker)
    assert status == 200
    assert "message" in letter["reason"]
    assert_bounded_and_printable(letter)


@pytest.mark.parametrize(
    ("field", "value"),
    [("data", 12345), ("attributes", "not-a-map"), ("publishTime", "2026-01-05T14:30:00")],
)
def test_a_message_with_a_broken_field_is_acked_and_dead_lettered_naming_the_field(
    server: FunctionsServer, db: firestore.Client, field: str, value: Any
) -> None:
    payload = intent()
    message_id = unique("m")
    body = message(payload, message_id)
    body[field] = value

    status = push(server, body)

    letter = dead_letter(db, message_id)
    assert status == 200
    assert letter is not None
    assert field in letter["reason"]
    assert not reservation_exists(db, payload)


def test_a_cloud_event_of_another_type_is_acked_and_dead_lettered_without_executing(
    event_server: FunctionsServer, db: firestore.Client
) -> None:
    payload = intent()
    message_id = unique("m")
    data = {"message": message(payload, message_id), "subscription": "s"}

    status = send_event(event_server, data, event_type="google.cloud.storage.object.v1.finalized")

    letter = dead_letter(db, message_id)
    assert status == 200
    assert letter is not None
    assert "google.cloud.storage.object.v1.finalized" in letter["reason"]
    assert not reservation_exists(db, payload)


# -- #13: push bodies functions-framework refused (400/500) before our code ran ------------------


def post_raw(server: FunctionsServer, body: bytes) -> int:
    status, _ = server.post(body=body)
    return status


def raw_body(shape: str, marker: str) -> bytes:
    """The golden hostile body `tests/data/<shape>.json`, made unique to one test by `marker`."""
    body: Any = golden(shape)
    if shape == "push_message_string":
        body["message"] = marker
    elif shape == "push_no_message_id":
        body["message"]["data"] = encode(f"{{not json {marker}")
    elif shape == "push_body_array":
        body.append(marker)
    elif shape == "push_body_string":
        body += marker
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("shape", "reason_part"),
    [
        ("push_message_string", "its message is a string"),
        ("push_no_message_id", "not JSON"),
        ("push_body_array", "it is an array"),
        ("push_body_string", "it is a string"),
    ],
)
def test_a_raw_push_body_of_any_shape_is_acked_and_dead_lettered_with_its_reason(
    server: FunctionsServer, db: firestore.Client, shape: str, reason_part: str
) -> None:
    marker = unique(shape)

    status = post_raw(server, raw_body(shape, marker))

    [letter] = dead_letters_holding(db, marker)
    assert status == 200
    assert reason_part in letter["reason"], letter["reason"]
    assert_bounded_and_printable(letter)


def test_a_push_body_that_is_not_json_is_acked_and_dead_lettered_under_its_hash(
    server: FunctionsServer, db: firestore.Client
) -> None:
    body = f"{{not json at all {unique('body')}".encode()

    status = post_raw(server, body)

    letter = dead_letter(db, "payload-" + hashlib.sha256(body).hexdigest())
    assert status == 200
    assert letter is not None
    assert letter["data"] == body.decode()
    assert "push body is not readable JSON" in letter["reason"]


def test_a_message_with_attributes_and_no_data_is_acked_and_dead_lettered(
    server: FunctionsServer, db: firestore.Client
) -> None:
    body = golden("push_no_data")
    message_id = unique("m")
    body["message"].update(messageId=message_id, message_id=message_id)

    status = post_raw(server, json.dumps(body).encode())

    letter = dead_letter(db, message_id)
    assert status == 200
    assert letter is not None
    assert "empty message" in letter["reason"]
    assert letter["attributes"] == {"origin": "golden"}


def test_a_valid_intent_pushed_without_a_message_id_still_executes(
    server: FunctionsServer, db: firestore.Client
) -> None:
    payload = intent()

    status = push(server, message(payload, ABSENT))

    snap = reservation(db, payload)
    assert status == 200
    assert (snap.get("status"), snap.get("outcome")) == ("released", "placed")


# -- #13.3: messages without an id ------------------------------------------------------------


def test_bad_messages_without_an_id_each_get_a_dead_letter_of_their_own(
    server: FunctionsServer, event_server: FunctionsServer, db: firestore.Client
) -> None:
    first, second = (f"{{not json {unique('p')}".encode() for _ in range(2))

    statuses = [
        push(server, message(first, "")),
        send_event(event_server, {"message": message(second, ABSENT), "subscription": "s"}),
    ]

    letters = [dead_letter(db, "payload-" + hashlib.sha256(p).hexdigest()) for p in (first, second)]
    assert statuses == [200, 200]
    assert [letter and letter["data"] for letter in letters] == [first.decode(), second.decode()]


def test_a_valid_intent_still_executes_through_a_raw_push(
    server: FunctionsServer, db: firestore.Client
) -> None:
    payload = intent()

    status = push(server, message(payload, unique("m")))

    snap = reservation(db, payload)
    assert status == 200
    assert (snap.get("status"), snap.get("outcome")) == ("released", "placed")


# -- #12.6: a publisher's clock cannot make an old or a future intent fresh ---------------------


def rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def paper_order_exists(db: firestore.Client, payload: dict[str, Any]) -> bool:
    ref = db.collection("tenants", payload["tenant_id"], "paper_orders")
    return bool(ref.document(payload["client_intent_id"]).get().exists)


@pytest.mark.parametrize(
    ("created_offset", "published_offset"),
    [
        pytest.param(timedelta(0), timedelta(hours=-1), id="created now, published an hour ago"),
        pytest.param(timedelta(hours=1), timedelta(0), id="created an hour from now"),
    ],
)
def test_an_intent_whose_created_at_defeats_its_publish_time_ends_stale_without_an_order(
    server: FunctionsServer,
    db: firestore.Client,
    created_offset: timedelta,
    published_offset: timedelta,
) -> None:
    now = datetime.now(UTC)
    payload = intent(created_at=rfc3339(now + created_offset))
    published = rfc3339(now + published_offset)
    body = message(payload, unique("m"), publishTime=published, publish_time=published)

    status = push(server, body)

    snap = reservation(db, payload)
    assert status == 200
    assert (snap.get("status"), snap.get("outcome")) == ("released", "stale")
    assert not paper_order_exists(db, payload)
