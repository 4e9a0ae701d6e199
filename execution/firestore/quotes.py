"""`FirestoreQuoteSource`: the latest quote from `market_quotes/{symbol}` (`bid`, `ask`, `ts`)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from google.cloud import firestore

from execution.firestore.support import CallPolicy, snapshot_data, store_errors
from execution.routing import Quote, quote_problem
from execution.telemetry import emit

logger = logging.getLogger(__name__)

QUOTES = "market_quotes"


def quote_ref(db: firestore.Client, symbol: str) -> firestore.DocumentReference:
    """`market_quotes/{symbol}`."""
    return db.collection(QUOTES).document(symbol)


def quote_from_document(symbol: str, data: dict[str, Any] | None) -> Quote | None:
    """The quote a document holds; None where absent or malformed (never a crash before acquire).

    Malformed (logged `exec.quote.malformed`): `bid`/`ask` missing, not JSON numbers, not finite,
    not positive, above `MAX_QUOTE_PRICE` or crossed, or `ts` not a timestamp. It is then "no
    quote": routing treats it as missing, and a market order sized in shares waits (retried).
    """
    if not data:
        return None
    problem = _document_problem(data)
    if problem is not None:
        emit(logger, "exec.quote.malformed", logging.WARNING, symbol=symbol, problem=problem)
        return None
    return Quote(symbol=symbol, bid=float(data["bid"]), ask=float(data["ask"]), ts=data["ts"])


def _document_problem(data: dict[str, Any]) -> str | None:
    for name in ("bid", "ask"):
        value = data.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{name} is {type(value).__name__}, not a number"
    if not isinstance(data.get("ts"), datetime):
        return f"ts is {type(data.get('ts')).__name__}, not a timestamp"
    return quote_problem(float(data["bid"]), float(data["ask"]))


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
