"""The dead-letter port: payloads that can never execute, recorded with their reason."""

from __future__ import annotations

from typing import Protocol

from execution.intake import Delivery


class DeadLetters(Protocol):
    """Records undeliverable messages at `execution_dead_letters/{message_id}`."""

    def record(self, delivery: Delivery, reason: str) -> None:
        """Write the record idempotently; raises `StoreUnavailableError` (retry: lose nothing)."""
        ...
