"""`FirestoreKillSwitches`: `ops/execution_kill_switch` and its per-tenant twin (contract)."""

from __future__ import annotations

from google.cloud import firestore

from execution.firestore.support import CallPolicy, store_errors

KILL_SWITCH = "execution_kill_switch"


class FirestoreKillSwitches:
    """Reads both switch documents in one round trip."""

    def __init__(self, db: firestore.Client, *, policy: CallPolicy) -> None:
        self._db = db
        self._policy = policy

    def engaged(self, tenant_id: str) -> str | None:
        """`global`, `tenant` or None; raises `StoreUnavailableError` rather than guess."""
        global_doc = self._db.collection("ops").document(KILL_SWITCH)
        tenant_doc = self._db.collection("tenants", tenant_id, "ops").document(KILL_SWITCH)
        with store_errors("kill switch read"):
            snaps = {
                s.reference.path: s
                for s in self._db.get_all([global_doc, tenant_doc], **self._policy.kwargs())
            }
        for name, doc in (("global", global_doc), ("tenant", tenant_doc)):
            snap = snaps[doc.path]
            if snap.exists and bool((snap.to_dict() or {}).get("enabled")):
                return name
        return None
