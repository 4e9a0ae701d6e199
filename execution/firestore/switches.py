"""`FirestoreKillSwitches`: `ops/execution_kill_switch` and its per-tenant twin (contract)."""

from __future__ import annotations

from typing import Any

from google.cloud import firestore

from execution.documents import KillSwitchDocument
from execution.firestore.paths import kill_switch_ref
from execution.firestore.support import CallPolicy, snapshot_data, store_errors


def switch_refs(
    db: firestore.Client, tenant_id: str
) -> tuple[firestore.DocumentReference, firestore.DocumentReference]:
    """The global switch and `tenant_id`'s, in the order `engaged_switch` takes them."""
    return kill_switch_ref(db, None), kill_switch_ref(db, tenant_id)


def engaged_switch(
    global_data: dict[str, Any] | None, tenant_data: dict[str, Any] | None
) -> str | None:
    """`global`, `tenant` or None, from the two switch documents (None where absent)."""
    for name, data in (("global", global_data), ("tenant", tenant_data)):
        if data is not None and KillSwitchDocument.parse(data).enabled:
            return name
    return None


class FirestoreKillSwitches:
    """Reads both switch documents in one round trip."""

    def __init__(self, db: firestore.Client, *, policy: CallPolicy) -> None:
        self._db = db
        self._policy = policy

    def engaged(self, tenant_id: str) -> str | None:
        """`global`, `tenant` or None; raises `StoreUnavailableError` rather than guess."""
        global_doc, tenant_doc = switch_refs(self._db, tenant_id)
        with store_errors("kill switch read"):
            snaps = {
                s.reference.path: s
                for s in self._db.get_all([global_doc, tenant_doc], **self._policy.kwargs())
            }
        return engaged_switch(
            snapshot_data(snaps[global_doc.path]), snapshot_data(snaps[tenant_doc.path])
        )
