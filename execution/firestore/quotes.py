"""`FirestoreQuoteSource`: the latest quote from `market_quotes/{symbol}` (`bid`, `ask`, `ts`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.cloud import firestore

from execution.firestore.support import CallPolicy, snapshot_data, store_errors
from execution.routing import Quote

QUOTES = "market_quotes"


def quote_ref(db: firestore.Client, symbol: str) -> firestore.DocumentReference:
    """`market_quotes/{symbol}`."""
    return db.collection(QUOTES).document(symbol)


def quote_from_document(symbol: str, data: dict[str, Any] | None) -> Quote | None:
    """The quote a document holds; None where absent or malformed (never a crash before acquire)."""
    if not data:
        return None
    try:
        bid, ask, ts = float(data["bid"]), float(data["ask"]), data["ts"]
    except (KeyError, TypeError, ValueError):
        return None
    if not isinstance(ts, datetime):
        return None
    return Quote(symbol=symbol, bid=bid, ask=ask, ts=ts)


class FirestoreQuoteSource:
    """Reads one quote document per call."""

    def __init__(self, db: firestore.Client, *, policy: CallPolicy) -> None:
        self._db = db
        self._policy = policy

    def latest(self, symbol: str) -> Quote | None:
        """The quote for `symbol`, None where absent or incomplete."""
        with store_errors("quote read"):
            snap = quote_ref(self._db, symbol).get(**self._policy.kwargs())
        return quote_from_document(symbol, snapshot_data(snap))
