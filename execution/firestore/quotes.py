"""`FirestoreQuoteSource`: the latest quote from `market_quotes/{symbol}` (`bid`, `ask`, `ts`)."""

from __future__ import annotations

import logging
from typing import Any

from google.cloud import firestore

from execution.documents import MalformedDocumentError, QuoteDocument
from execution.firestore.paths import quote_ref as quote_ref
from execution.firestore.support import CallPolicy, snapshot_data, store_errors
from execution.routing import Quote
from execution.telemetry import emit

logger = logging.getLogger(__name__)


def quote_from_document(symbol: str, data: dict[str, Any] | None) -> Quote | None:
    """The quote a document holds; None where absent or malformed (never a crash before acquire).

    Malformed (logged `exec.quote.malformed`): `bid`/`ask` missing, not JSON numbers, not finite,
    not positive, above `MAX_QUOTE_PRICE` or crossed, or `ts` not a timestamp. It is then "no
    quote": routing treats it as missing, and a market order sized in shares waits (retried).
    """
    if not data:
        return None
    try:
        return QuoteDocument.parse(data).to_quote(symbol)
    except MalformedDocumentError as exc:
        emit(logger, "exec.quote.malformed", logging.WARNING, symbol=symbol, problem=str(exc))
        return None


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
