"""`StagedWrites`: best-effort writes that ride on the release's batch instead of their own commit.

The ledger entry of a placed order is written in the same atomic batch as the release that
records `placed`: one round trip fewer, and the two land together. Where the release cannot carry
them (fenced by a newer attempt, no Firestore lease under fail-open, the store down) the
invocation writes what is left on its own at the end (`flush`).
"""

from __future__ import annotations

from typing import Any

from google.cloud import firestore

from execution.firestore import lean_writes
from execution.firestore.support import CallPolicy, store_errors


class StagedWrites:
    """Merge-writes waiting for a batch; cleared once one carrying them commits."""

    def __init__(self) -> None:
        self._writes: list[tuple[firestore.DocumentReference, dict[str, Any]]] = []

    def stage_merge(self, doc: firestore.DocumentReference, fields: dict[str, Any]) -> None:
        """Queue `doc.set(fields, merge=True)`."""
        self._writes.append((doc, fields))

    def add_to(self, batch: firestore.WriteBatch) -> None:
        """Put every queued write into `batch`; call `committed` once it commits."""
        for doc, fields in self._writes:
            lean_writes.merge(batch, doc, fields)

    def committed(self) -> None:
        """A batch carrying the queued writes committed: nothing is left to write."""
        self._writes.clear()

    def flush(self, db: firestore.Client, policy: CallPolicy) -> None:
        """Commit what no batch carried, alone; raises `StoreUnavailableError` where it cannot."""
        if not self._writes:
            return
        batch = db.batch()
        self.add_to(batch)
        with store_errors("staged write"):
            batch.commit(**policy.kwargs())
        self.committed()
