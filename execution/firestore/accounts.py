"""`FirestoreAccountSource`: account settings from `tenants/{tenant_id}/accounts/{account}`."""

from __future__ import annotations

from typing import Any

from google.cloud import firestore

from execution.documents import AccountSettings
from execution.firestore.paths import account_ref
from execution.firestore.support import CallPolicy, snapshot_data, store_errors


def account_from_document(data: dict[str, Any] | None) -> AccountSettings | None:
    """The settings an account document holds; None where there is no document.

    Raises `MalformedAccountError` where the document is malformed.
    """
    return None if data is None else AccountSettings.parse(data)


class FirestoreAccountSource:
    """Reads one account document per call."""

    def __init__(self, db: firestore.Client, *, policy: CallPolicy) -> None:
        self._db = db
        self._policy = policy

    def get(self, tenant_id: str, broker_account_id: str) -> AccountSettings | None:
        """The account's settings, None where the document is absent."""
        return account_from_document(self.document(tenant_id, broker_account_id))

    def document(self, tenant_id: str, broker_account_id: str) -> dict[str, Any] | None:
        """The account document's fields as stored, None where it is absent."""
        with store_errors("account read"):
            snap = account_ref(self._db, tenant_id, broker_account_id).get(**self._policy.kwargs())
        return snapshot_data(snap)
