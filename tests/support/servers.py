"""The function servers the end-to-end tests run: `execute_intent` as deployed, on the emulator."""

from __future__ import annotations

from pathlib import Path

from devtools.functions_server import FunctionsServer


def paper_intent_server(project: str, firestore_host: str, log_path: Path) -> FunctionsServer:
    """`execute_intent` on the paper broker, short timings (TTL above the timeout); unstarted."""
    return FunctionsServer(
        "execute_intent",
        "cloudevent",
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
