"""Third review: a broker secret mapped to the wrong variable, through a real function server.

A deploy maps secrets to variables by name (`--set-secrets VAR=secret:version`, an env file): one
swapped line puts the Alpaca secret key into `AGENT_MODE`, `BROKER`, a number's variable or the
base URL. The instance then refuses its settings on its first request (a 500, so Pub/Sub keeps
the message until the deploy is fixed, which is right), and functions-framework writes the
refusal's traceback to the logs, which Cloud Logging keeps and Error Reporting shows. The
refusal must name the variable, never the secret it holds. Each case here runs `functions-
framework` on `main.py` as deployed and reads everything the process wrote.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.functions_server import FunctionsServer
from tests.support.events import message, push_body
from tests.support.servers import PUSH_ENTRY_POINT

KEY_ID = "PKREVIEW3KEYID0000000"
SECRET = "sk-Review3-Secret-Value-4242-abcdefGHIJ"
"""What Alpaca issues looks like this: printable ASCII, about 40 characters."""

MISPLACED = {
    "AGENT_MODE": {},
    "BROKER": {},
    "EXECUTION_HALTED": {},
    "FUNCTION_TIMEOUT_SECONDS": {},
    "RESERVATION_MAX_ATTEMPTS": {},
    "APCA_API_BASE_URL (AGENT_MODE=PAPER)": {"AGENT_MODE": "PAPER"},
    "APCA_API_BASE_URL (AGENT_MODE=LIVE)": {"AGENT_MODE": "LIVE"},
}
"""The variable the secret lands in, and what else the deploy sets."""


@pytest.fixture
def refused(
    request: pytest.FixtureRequest,
    firestore_project: str,
    firestore_emulator_host: str,
    tmp_path: Path,
) -> Iterator[tuple[int, str]]:
    """(the push's status, everything the server wrote) for the case `request.param`."""
    variable = request.param.split(" ")[0]
    env = {
        "GOOGLE_CLOUD_PROJECT": firestore_project,
        "FIRESTORE_EMULATOR_HOST": firestore_emulator_host,
        "BROKER": "alpaca",
        "APCA_API_KEY_ID": KEY_ID,
        "APCA_API_SECRET_KEY": SECRET,
        **MISPLACED[request.param],
        variable: SECRET,
    }
    server = FunctionsServer(*PUSH_ENTRY_POINT, env=env, log_path=tmp_path / "server.log")
    server.start()
    try:
        status, _ = server.post(body=push_body(message(b"{}", "m-review3-secrets")))
        yield status, server.log_path.read_text(errors="replace")
    finally:
        server.kill()


@pytest.mark.parametrize("refused", list(MISPLACED), indirect=True)
def test_a_secret_in_the_wrong_variable_is_refused_without_being_written_anywhere(
    refused: tuple[int, str],
) -> None:
    status, written = refused

    assert status == 500  # the deploy is wrong: retry until it is fixed, never ack
    assert "SettingsError" in written
    assert SECRET not in written
    assert SECRET.lower() not in written.lower()
