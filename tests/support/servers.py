"""The function servers the end-to-end tests run: `execute_intent` as deployed, on the emulator."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from devtools.functions_server import FunctionsServer
from tests.support.builders import unique
from tests.support.events import message, push_body
from tests.support.waiting import wait_until

PUSH_ENTRY_POINT = ("execute_intent_push", "http")
"""What a Pub/Sub push subscription targets: the raw push body, parsed by our own code."""

EVENTARC_ENTRY_POINT = ("execute_intent", "cloudevent")
"""What an Eventarc trigger (`--trigger-topic`) targets: a binary-mode CloudEvent."""


def paper_intent_server(
    project: str,
    firestore_host: str,
    log_path: Path,
    entry_point: tuple[str, str] = PUSH_ENTRY_POINT,
) -> FunctionsServer:
    """The intent entry point on the paper broker, short timings (TTL above the timeout)."""
    target, signature_type = entry_point
    return FunctionsServer(
        target,
        signature_type,
        env={
            "GOOGLE_CLOUD_PROJECT": project,
            "FIRESTORE_EMULATOR_HOST": firestore_host,
            "FUNCTION_TIMEOUT_SECONDS": "4",
            "RESERVATION_TTL_SECONDS": "6",
            # The lease must leave room for a paper broker call (the store's deadline) and skew.
            "CLOCK_SKEW_SECONDS": "0.5",
            "FIRESTORE_TIMEOUT_SECONDS": "2",
        },
        log_path=log_path,
    )


@contextmanager
def warm_push_server(
    project: str, firestore_host: str, log_path: Path
) -> Iterator[FunctionsServer]:
    """`paper_intent_server` on the push entry point, started and past its first answer, killed
    on exit: a cold instance's first Firestore write in a fresh project can outlast its 2 s
    deadline (a 500 that Pub/Sub would simply redeliver), so one bad message is answered first."""
    functions = paper_intent_server(project, firestore_host, log_path)
    functions.start()
    try:
        wait_until(
            lambda: functions.post(body=push_body(message(b"warm-up", unique("warm"))))[0] == 200,
            timeout=60,
            what="the function server's first answer",
            interval=0.5,
        )
        yield functions
    finally:
        functions.kill()


def warm_push_server_fixture() -> Any:
    """A module-scoped `server` fixture: `warm_push_server` on the module's emulator project."""

    @pytest.fixture(scope="module")
    def server(
        firestore_project: str,
        firestore_emulator_host: str,
        tmp_path_factory: pytest.TempPathFactory,
    ) -> Iterator[FunctionsServer]:
        log_path = Path(tmp_path_factory.mktemp("functions")) / "execute_intent.log"
        with warm_push_server(firestore_project, firestore_emulator_host, log_path) as functions:
            yield functions

    return server
