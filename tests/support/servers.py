"""The function servers the end-to-end tests run: `execute_intent` as deployed, on the emulator."""

from __future__ import annotations

from pathlib import Path

from devtools.functions_server import FunctionsServer

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
