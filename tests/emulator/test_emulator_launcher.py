"""`python -m devtools.emulators -- CMD` (what every make target runs inside): real emulators."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from devtools import emulators

ROOT = Path(__file__).resolve().parents[2]

# Run inside the emulators: report both addresses and whether each answers, then exit 3.
PROBE = """
import json, os, sys
from devtools.emulators import answers_http
hosts = {v: os.environ.get(v, "") for v in ("FIRESTORE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST")}
print(json.dumps({v: [h, answers_http(h)] for v, h in hosts.items()}))
sys.exit(3)
"""


def test_a_command_runs_with_both_emulators_answering_and_they_stop_after_it() -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"FIRESTORE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST"}
    }

    finished = subprocess.run(
        [sys.executable, "-m", "devtools.emulators", "--", sys.executable, "-c", PROBE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )

    seen = json.loads(finished.stdout.strip().splitlines()[-1])
    assert finished.returncode == 3, finished.stderr
    assert [answering for _, answering in seen.values()] == [True, True]
    assert [emulators.answers_http(host) for host, _ in seen.values()] == [False, False]
