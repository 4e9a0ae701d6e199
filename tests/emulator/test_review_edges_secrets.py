"""Review: a broker key echoed back in an encoding our scrubber did not know reaches no record.

Keys may hold any printable ASCII but a space (`check_broker_secret`). Alpaca's API is written
in Go, whose JSON encoder writes `&`, `<` and `>` as `\\u0026`, `\\u003c`, `\\u003e`; a gateway's
HTML error page writes them as `&amp;`, `&lt;`, `&gt;`. A broker or proxy that echoes the request's
headers in an error body whose shape is not Alpaca's `{"message": "..."}` has that body quoted as
text in the error: the key, so encoded, must be scrubbed like its raw and URL-encoded forms.

Each intent goes through `main.execute_intent` into the engine on the Firestore emulator with the
real `AlpacaBroker` against a loopback server scripting the answer; then every log record, the
retried delivery's traceback and the reservation are searched for the key in those encodings.
"""

from __future__ import annotations

import html
import json
import logging
import traceback

import pytest
from google.cloud import firestore

import main
from execution.bootstrap import Service, bootstrap
from execution.errors import RetryableError
from execution.settings import Settings
from tests.support.alpaca_wire import alpaca_env, intent_event
from tests.support.builders import make_intent, reservation
from tests.support.wire_server import Script, WireServer, http_answer

KEY_ID = "PKEDGE<KEY>&ID00001"
SECRET_KEY = "edge&secret<with>odd'\"chars&&0001"
TENANT = "tenant-secrets"


def go_json(text: str) -> str:
    """`text` as Go's encoding/json writes a string (HTML-safe: `&`, `<`, `>` as \\u00XX)."""
    return (
        json.dumps(text)[1:-1]
        .replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
    )


def encodings(secret: str) -> list[str]:
    return [secret, go_json(secret), html.escape(secret), html.escape(secret, quote=False)]


ECHOES = [
    pytest.param(
        http_answer(
            b"HTTP/1.1 400 Bad Request",
            (
                '{"code": 40010000, "error": {"detail": "invalid headers", "echo": "'
                + go_json(f"APCA-API-KEY-ID: {KEY_ID}; APCA-API-SECRET-KEY: {SECRET_KEY}")
                + '"}}'
            ).encode(),
            b"Content-Type: application/json",
        ),
        id="Go JSON body (another shape than Alpaca's message)",
    ),
    pytest.param(
        http_answer(
            b"HTTP/1.1 502 Bad Gateway",
            (
                "<html><body><h1>502</h1><pre>"
                + html.escape(f"APCA-API-KEY-ID: {KEY_ID}\nAPCA-API-SECRET-KEY: {SECRET_KEY}")
                + "</pre></body></html>"
            ).encode(),
            b"Content-Type: text/html",
        ),
        id="a gateway's HTML page",
    ),
]


@pytest.fixture
def service(db: firestore.Client, wire: WireServer, firestore_project: str) -> Service:
    env = alpaca_env(
        wire.base_url,
        key_id=KEY_ID,
        secret_key=SECRET_KEY,
        GOOGLE_CLOUD_PROJECT=firestore_project,
    )
    return bootstrap(Settings.from_env(env), db=db)


def leaks(texts: list[str]) -> list[str]:
    wanted = [form.lower() for secret in (KEY_ID, SECRET_KEY) for form in encodings(secret)]
    return [text[:300] for text in texts if any(form in text.lower() for form in wanted)]


@pytest.mark.parametrize("echo", ECHOES)
def test_a_key_echoed_in_go_json_or_html_reaches_no_log_record_or_traceback(
    db: firestore.Client,
    wire: WireServer,
    service: Service,
    echo: Script,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(main, "_service", service)
    monkeypatch.setattr(logging.getLogger("execution"), "propagate", True)
    caplog.set_level(logging.DEBUG)
    intent = make_intent(tenant_id=TENANT, qty=1, limit_price=100.0)
    wire.script(echo)

    printed: list[str] = []
    try:
        main.execute_intent(intent_event(intent))
    except RetryableError as exc:
        printed.append("".join(traceback.format_exception(exc)))

    record = reservation(db, TENANT, intent.client_intent_id)
    # The answer was real and became a record: the keys reached the server, the error is kept.
    assert len(wire.requests) == 1
    assert record["outcome"] in {"rejected", "exception"}
    assert record["error"]
    # As stored and printed (a repr would double the backslashes of `\u0026`, hiding it).
    assert leaks([str(value) for value in record.values()]) == []
    assert leaks(printed) == []
    logged = [str(value) for r in caplog.records for value in (r.getMessage(), *vars(r).values())]
    assert leaks(logged) == []
