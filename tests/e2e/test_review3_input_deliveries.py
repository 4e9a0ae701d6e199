"""Third review: push bodies a reviewer wrote by hand, POSTed to `execute_intent_push` as deployed.

`functions-framework` runs `main.py` on the paper broker and the Firestore emulator (see
`tests/e2e/test_hostile_deliveries.py`, whose attacks these extend). Every delivery must end
acked (200) with a dead letter saying why, or executed once; never a 400/500 that Pub/Sub would
deliver again and again, and never an order from a payload another JSON reader refuses.

What broke: an intent in UTF-16 or UTF-32, or UTF-8 behind a byte-order mark, and an intent
holding `NaN` or `Infinity` (in `metadata`, where no number check looks) were executed: Python's
`json.loads` guesses an encoding from the first bytes and reads those tokens, while JSON between
systems is UTF-8 without a mark (RFC 8259), so the publisher's own check, an audit or a consumer
in another language refuses the very payload we traded on. They are dead-lettered now
(`execution.text.read_json`). What held: bodies near Pub/Sub's 10 MB, integers of 100,000 digits
anywhere, NUL bytes and control characters in ids and attributes, `deliveryAttempt` and
`publishTime` of every shape.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from google.cloud import firestore

from devtools.functions_server import FunctionsServer
from tests.support.builders import unique
from tests.support.events import intent_payload, message, push_body
from tests.support.servers import warm_push_server_fixture

DEAD_LETTERS = "execution_dead_letters"
PUBSUB_MAX_MESSAGE_BYTES = 10_000_000


server = warm_push_server_fixture()


def intent() -> dict[str, Any]:
    return intent_payload("tenant-review3-input")


def push(server: FunctionsServer, message_body: Any) -> int:
    status, _ = server.post(body=push_body(message_body))
    return status


def dead_letter(db: firestore.Client, doc_id: str) -> dict[str, Any] | None:
    snap = db.collection(DEAD_LETTERS).document(doc_id).get()
    return snap.to_dict() if snap.exists else None


def reservation_exists(db: firestore.Client, payload: dict[str, Any]) -> bool:
    ref = db.collection("tenants", payload["tenant_id"], "execution_reservations")
    return bool(ref.document(payload["client_intent_id"]).get().exists)


def outcome(db: firestore.Client, payload: dict[str, Any]) -> Any:
    ref = db.collection("tenants", payload["tenant_id"], "execution_reservations")
    snap = ref.document(payload["client_intent_id"]).get()
    return snap.get("outcome") if snap.exists else None


# -- payloads that other JSON readers refuse ---------------------------------------------------

OTHER_READERS_REFUSE = {
    "UTF-16 with its byte-order mark": lambda p: json.dumps(p).encode("utf-16"),
    "UTF-16LE without a mark": lambda p: json.dumps(p).encode("utf-16-le"),
    "UTF-32": lambda p: json.dumps(p).encode("utf-32"),
    "UTF-8 behind a byte-order mark": lambda p: b"\xef\xbb\xbf" + json.dumps(p).encode(),
    "NaN in metadata": lambda p: json.dumps({**p, "metadata": {"x": float("nan")}}).encode(),
    "Infinity in metadata": lambda p: json.dumps({**p, "metadata": {"x": float("inf")}}).encode(),
    "-Infinity in metadata": lambda p: json.dumps({**p, "metadata": [float("-inf")]}).encode(),
}


@pytest.mark.parametrize("label", list(OTHER_READERS_REFUSE))
def test_an_intent_other_json_readers_refuse_is_dead_lettered_never_executed(
    server: FunctionsServer, db: firestore.Client, label: str
) -> None:
    payload = intent()
    message_id = unique("m")

    status = push(server, message(OTHER_READERS_REFUSE[label](payload), message_id))

    letter = dead_letter(db, message_id)
    assert status == 200, label
    assert letter is not None, label
    assert "not JSON" in letter["reason"], letter["reason"]
    assert not reservation_exists(db, payload), label


def test_the_same_intent_written_as_plain_utf8_json_executes(
    server: FunctionsServer, db: firestore.Client
) -> None:
    payload = intent()

    status = push(server, message(json.dumps(payload).encode(), unique("m")))

    assert status == 200
    assert outcome(db, payload) == "placed"


# -- what held ------------------------------------------------------------------------------------


def test_a_message_at_pubsubs_size_limit_is_acked_and_dead_lettered_with_its_hash(
    server: FunctionsServer, db: firestore.Client
) -> None:
    # Pub/Sub's limit is 10 MB of message (data and attributes); base64 makes the body ~13 MB.
    data = b'{"junk": "' + b"\xff" * (PUBSUB_MAX_MESSAGE_BYTES - 12) + b'"}'
    message_id = unique("m")

    status = push(server, message(data, message_id))

    letter = dead_letter(db, message_id)
    assert status == 200
    assert letter is not None
    assert letter["truncated"] is True and letter["data_bytes"] == len(data)
    assert f"{len(data)} bytes" in letter["reason"]


HUGE_NUMBER = "9" * 100_000
"""Past Python's 4300-digit int-str limit (ValueError) by far."""


@pytest.mark.parametrize(
    "where",
    ["qty", "metadata", "publishTime", "messageId", "deliveryAttempt", "envelope"],
)
def test_an_integer_of_100000_digits_anywhere_is_acked_and_dead_lettered(
    server: FunctionsServer, db: firestore.Client, where: str
) -> None:
    payload = intent()
    marker = unique("huge")
    data = json.dumps({**payload, where: marker}).encode()
    if where in {"qty", "metadata"}:
        data = data.replace(f'"{marker}"'.encode(), HUGE_NUMBER.encode())
    body = push_body(message(data, marker))
    if where in {"publishTime", "messageId", "deliveryAttempt"}:
        body = body.replace(f'"{where}": '.encode(), f'"{where}": {HUGE_NUMBER}, "x": '.encode())
    if where == "envelope":
        body = body[:-1] + f', "huge": {HUGE_NUMBER}}}'.encode()

    status, _ = server.post(body=body)

    assert status == 200, where
    assert not reservation_exists(db, payload), where


def test_nul_bytes_and_controls_in_the_id_and_attributes_are_stored_escaped(
    server: FunctionsServer, db: firestore.Client
) -> None:
    message_id = unique("m") + "\x00\x1b[2J\r"
    attributes = {"a\x00b": "c\x00d\x1b]52;c;eA==\x07", "\u202e": "\ud800"}
    body = message(b"{not json", message_id, attributes=attributes)

    status = push(server, body)

    letters = [
        snap.to_dict() or {}
        for snap in db.collection(DEAD_LETTERS).stream()
        if (snap.to_dict() or {}).get("message_id", "").startswith(message_id[:-6])
    ]
    assert status == 200
    [letter] = letters
    assert letter["message_id"].isprintable()
    assert all(v.isprintable() for v in letter["attributes"].values())
    assert all(k.isprintable() for k in letter["attributes"])


@pytest.mark.parametrize(
    "attempt", [None, 0, -1, 1.5, "7", [], {"n": 1}, True, 10**18], ids=lambda v: repr(v)[:12]
)
def test_a_valid_intent_executes_once_whatever_its_delivery_attempt_says(
    server: FunctionsServer, db: firestore.Client, attempt: Any
) -> None:
    payload = intent()
    body = message(payload, unique("m"), deliveryAttempt=attempt)

    statuses = [push(server, body), push(server, body)]

    assert statuses == [200, 200]
    assert outcome(db, payload) == "placed"


@pytest.mark.parametrize(
    "publish_time",
    [
        "9999-12-31T23:59:59Z",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59-23:59",
        "2026-13-45T99:99:99Z",
        "1e999",
        "\x00",
    ],
)
def test_a_publish_time_of_any_shape_never_executes_an_intent_late_or_from_the_future(
    server: FunctionsServer, db: firestore.Client, publish_time: str
) -> None:
    payload = intent()  # no created_at: the publish time alone dates it
    body = message(payload, unique("m"), publishTime=publish_time, publish_time=publish_time)

    status = push(server, body)

    assert status == 200
    assert outcome(db, payload) in {None, "stale"}  # dead-lettered, or recorded stale


def test_base64_data_with_a_lone_surrogate_escape_is_dead_lettered(
    server: FunctionsServer, db: firestore.Client
) -> None:
    payload = intent()
    message_id = unique("m")
    text = base64.b64encode(json.dumps(payload).encode()).decode()
    body = message(b"", message_id)
    body["data"] = text[:8] + "\ud800" + text[8:]  # `json.dumps` writes it as \ud800

    status = push(server, body)

    letter = dead_letter(db, message_id)
    assert status == 200
    assert letter is not None
    assert not reservation_exists(db, payload)


def test_a_dead_letter_of_the_largest_storable_shape_is_written_under_firestores_limit(
    server: FunctionsServer, db: firestore.Client
) -> None:
    # Every bounded field at its bound, in the widest characters: 100 kB of data that is not
    # UTF-8 (stored as U+FFFD, 3 bytes each), attribute names that percent-encode past 256
    # characters, values of 1024 four-byte characters (cut from 1100), and 100 attributes past
    # the 100 kept.
    message_id = unique("m")
    wide = "\U0001f600"
    attributes = {f"{wide * 80}{n:05d}": wide * 1100 for n in range(200)}
    body = message(b"\xff" * 200_000, message_id, attributes=attributes)

    status = push(server, body)

    letter = dead_letter(db, message_id)
    assert status == 200
    assert letter is not None
    assert len(letter["attributes"]) == 100 and letter["attributes_dropped"] == 100
    assert letter["truncated"] is True
