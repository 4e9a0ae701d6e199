"""`import main` needs no network, credentials or emulator, and stays light for cold starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, socket, sys

def refuse(*args, **kwargs):
    raise AssertionError("import main opened a network connection")

socket.socket.connect = refuse
socket.create_connection = refuse
import main
heavy = ("google.cloud.firestore", "typer", "rich", "httpx")
print(json.dumps(sorted(m for m in sys.modules if m.startswith(heavy))))
"""


def import_main_in_a_bare_process() -> list[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.endswith("_EMULATOR_HOST")
        and key not in {"GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT"}
    }
    env["HOME"] = str(ROOT / "nonexistent-home")  # no gcloud credentials to find
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    loaded: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


def test_import_main_needs_no_network_credentials_or_emulator() -> None:
    import_main_in_a_bare_process()


def test_import_main_loads_neither_the_firestore_client_nor_operator_or_broker_libraries() -> None:
    assert import_main_in_a_bare_process() == []
