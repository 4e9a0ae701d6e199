"""`FirestoreQuoteSource`: the latest quote from `market_quotes/{symbol}` (`bid`, `ask`, `ts`)."""

from __future__ import annotations

from datetime import datetime

from google.cloud import firestore

from execution.firestore.support import CallPolicy, store_errors
from execution.routing import Quote


class FirestoreQuoteSource:
    """Reads one quote document per call."""

    def __init__(self, db: firestore.Client, *, policy: CallPolicy) -> None:
        self._db = db
        self._policy = policy

    def latest(self, symbol: str) -> Quote | None:
        """The quote for `symbol`, None where absent or incomplete."""
        with store_errors("quote read"):
            snap = (
                self._db.collection("market_quotes").document(symbol).get(**self._policy.kwargs())
            )
        data = snap.to_dict() if snap.exists else None
        if not data:
            return None
        try:
            bid, ask, ts = float(data["bid"]), float(data["ask"]), data["ts"]
        except (KeyError, TypeError, ValueError):
            return None  # a malformed quote is no quote: never a crash before acquire
        if not isinstance(ts, datetime):
            return None
        return Quote(symbol=symbol, bid=bid, ask=ask, ts=ts)
