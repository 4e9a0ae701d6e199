"""Third review: `read_json`, the one reader of JSON from outside, and the readers that use it."""

from __future__ import annotations

import base64
import json

import flask
import pytest

from execution.cli.queries import DeadLetterRow
from execution.telemetry import intent_ids_of, invocation_fields
from execution.text import RepeatedKeyError, UnreadableJsonError, read_json

INTENT = {"tenant_id": "t", "broker_account_id": "a", "client_intent_id": "i"}

UNREADABLE = {
    "UTF-16": json.dumps(INTENT).encode("utf-16"),
    "UTF-32": json.dumps(INTENT).encode("utf-32"),
    "a byte-order mark": b"\xef\xbb\xbf" + json.dumps(INTENT).encode(),
    "NaN": b'{"x": NaN}',
    "Infinity": b"[Infinity]",
    "-Infinity": b"[-Infinity]",
    "nested past the recursion limit": b"[" * 100_000 + b"]" * 100_000,
    "100,000 digits": b"9" * 100_000,
    "a repeated key": b'{"tenant_id": "x", "tenant_id": "t"}',
    "not UTF-8": b'{"a": "\xff"}',
    "not JSON": b"{not json",
}


@pytest.mark.parametrize("label", list(UNREADABLE))
def test_read_json_refuses_what_another_reader_would_read_otherwise_with_one_error(
    label: str,
) -> None:
    with pytest.raises(UnreadableJsonError) as raised:
        read_json(UNREADABLE[label])

    assert isinstance(raised.value, ValueError)
    assert len(str(raised.value)) < 200


def test_read_json_names_a_repeated_key_printably() -> None:
    with pytest.raises(RepeatedKeyError) as raised:
        read_json('{"\\u001b[2J": 1, "\\u001b[2J": 2}')

    assert "\\x1b[2J" in str(raised.value) and "\x1b" not in str(raised.value)


def test_read_json_reads_plain_json_as_json_loads_does() -> None:
    text = json.dumps({**INTENT, "qty": 1e-9, "metadata": {"a": [1, None, True, "\u00e9"]}})

    assert read_json(text.encode()) == json.loads(text) == read_json(text)


@pytest.mark.parametrize("label", list(UNREADABLE))
def test_the_log_context_binds_no_ids_from_a_payload_the_intake_cannot_read(label: str) -> None:
    data = base64.b64encode(UNREADABLE[label]).decode()

    ids = intent_ids_of({"message": {"messageId": "m-1", "data": data}})

    assert ids == {"message_id": "m-1"}


@pytest.mark.parametrize("label", list(UNREADABLE))
def test_a_dead_letter_whose_payload_cannot_be_read_names_no_intent(label: str) -> None:
    row = DeadLetterRow("m", "r", None, UNREADABLE[label].decode("utf-8", "replace"), "d")

    assert row.named_ids() == (None, None, None)


def test_a_push_body_written_with_its_data_twice_binds_no_intent_ids_to_the_log() -> None:
    # The intake dead-letters the envelope as ambiguous; its log lines must not carry the ids
    # of whichever `data` a lenient reader kept (another tenant's intent, possibly).
    other = base64.b64encode(json.dumps({**INTENT, "tenant_id": "other"}).encode()).decode()
    mine = base64.b64encode(json.dumps(INTENT).encode()).decode()
    body = f'{{"message": {{"messageId": "m-2", "data": "{mine}", "data": "{other}"}}}}'

    with flask.Flask(__name__).test_request_context("/", method="POST", data=body):
        fields = invocation_fields(flask.request)

    assert "tenant_id" not in fields and "message_id" not in fields
