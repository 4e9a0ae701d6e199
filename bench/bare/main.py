"""The baseline for cold start: a bare functions-framework function on the same client library.

It imports what a plain Firestore-backed function imports at module level (functions_framework and
google.cloud.firestore), builds its client on first use, and answers each request with one
Firestore `get`. `bench/coldstart.py` compares the project's `main.py` against it.
"""

from __future__ import annotations

from typing import Any

import functions_framework
from google.cloud import firestore

_db: firestore.Client | None = None


@functions_framework.http
def probe(request: Any) -> dict[str, bool]:
    """Read one document; report whether it exists."""
    global _db
    if _db is None:
        _db = firestore.Client()
    snapshot = _db.collection("bench").document("probe").get()
    return {"exists": snapshot.exists}
