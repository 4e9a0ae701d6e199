"""`make dev`: the service running locally until Ctrl-C, for the command line and for trying it.

On the emulators (`devtools.emulators`) it starts `main.execute_intent_push` under functions-
framework with the default settings (paper broker), gives the intents topic (`INTENT_TOPIC`,
default `trade-intents`) a push subscription to it, writes a sample account, and then waits.
Publish with `python -m execution publish ...` from another terminal and watch with `python -m
execution status`. Ctrl-C, SIGTERM or SIGHUP stops it and everything it started: the function
server and the emulators (`devtools.signals`).
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

from google.cloud import firestore

from devtools import emulators, signals
from devtools.functions_server import FunctionsServer
from devtools.pubsub import PushChannel
from execution.settings import Settings

LOG_FILE = Path("dev-function.log")
SAMPLE_TENANT, SAMPLE_ACCOUNT = "demo-tenant", "acct-main"


def main() -> int:
    """Run until interrupted on the emulators (started here unless their variables name running
    ones); returns the process exit code."""
    try:
        with (
            signals.stopped_by_signals(),
            emulators.running(emulators.FIRESTORE, emulators.PUBSUB) as hosts,
        ):
            return _serve(hosts[emulators.FIRESTORE.env_var], hosts[emulators.PUBSUB.env_var])
    except emulators.EmulatorUnavailable as exc:
        print(f"The local stack runs on the emulators only. {exc}")
        return 2
    except KeyboardInterrupt:
        print("\nstopped the local stack before it was ready")
        return 0


def _serve(firestore_host: str, pubsub_host: str) -> int:
    settings = Settings.from_env()
    project = settings.project or "demo-execution"
    LOG_FILE.write_text("")
    with contextlib.ExitStack() as started:  # a stop at any point stops what has started so far
        # A push subscription targets the push entry point, which answers every body itself.
        server = FunctionsServer(
            "execute_intent_push", "http", {"GOOGLE_CLOUD_PROJECT": project}, LOG_FILE
        )
        started.callback(server.kill)
        server.start()
        channel = PushChannel(project, settings.intent_topic, server.url)
        started.callback(channel.close)
        firestore.Client(project=project).collection("tenants", SAMPLE_TENANT, "accounts").document(
            SAMPLE_ACCOUNT
        ).set({"max_order_notional_usd": 5_000.0, "max_inflight_usd": 20_000.0}, merge=True)
        print(
            f"""
Local stack ready (Ctrl-C or SIGTERM stops it and the emulators; their data is lost):
  topic {channel.topic} pushes to execute_intent_push at {server.url}
  function log (JSON lines): {LOG_FILE}
  sample account: tenants/{SAMPLE_TENANT}/accounts/{SAMPLE_ACCOUNT}

In another terminal:
  export FIRESTORE_EMULATOR_HOST={firestore_host} PUBSUB_EMULATOR_HOST={pubsub_host} \\
         GOOGLE_CLOUD_PROJECT={project}
  .venv/bin/python -m execution status
""",
            flush=True,
        )
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt as stop:  # Ctrl-C, or `signals.Stopped`
            print(f"\nstopping the local stack ({stop or 'Ctrl-C'})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
