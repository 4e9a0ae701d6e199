"""`AlpacaBroker`: the `Broker` port over Alpaca's Trading API v2 (HTTP, JSON).

Endpoints: `POST /v2/orders`, `GET /v2/orders:by_client_order_id`, `GET /v2/orders/{id}`,
`GET /v2/orders` (the listing, for the reconciler) and `DELETE /v2/orders/{id}`. Every order carries
the request's `client_order_id`, and Alpaca refuses a second order with the same id (422
"client_order_id must be unique"), so a retry can never place a duplicate. How each answer maps
onto the error tree (`execution/errors.py`)::

    2xx with a well-formed order      → the order, with its status and `filled_qty` (an order
                                        already `rejected` is the engine's to record so)
    2xx with an unreadable body       → BrokerTransientError  (placed or not: outcome unknown)
    2xx naming another order than the → BrokerTransientError  (a proxy's or a cache's answer
      client order id or id asked       says nothing about ours: the engine compares the rest)
    timeout, connection error         → BrokerTransientError  (the request may have landed)
    past the call's overall deadline  → BrokerTransientError  (`execution/brokers/deadline.py`)
    408, 429, 5xx, any other status   → BrokerTransientError
    401, 403 refusing our keys        → BrokerTransientError, logged at ERROR (retried until stale)
    404/405 but "order not found"     → BrokerTransientError, logged at ERROR: no such endpoint,
                                        APCA_API_BASE_URL is wrong (an unknown symbol is a 422)
    403 for buying power and the like → BrokerRejectedError
    422/409 duplicate client_order_id → look the order up: ours → return it; a different order
                                        under our id → BrokerRejectedError; unreadable → transient
    other 4xx (400, 422, a 404 "order → BrokerRejectedError with the broker's message
      not found"...)
    422 on a cancel                   → OrderNotCancelableError (the order is already closed)

"Outcome unknown" is always a transient error and never a guess: the retry sends the same
`client_order_id`, and the duplicate answer resolves it to the order that already exists.
The API keys travel only in request headers. They are checked at construction (printable ASCII,
no spaces) and scrubbed, in every form an error may quote them, from every message this module
builds or logs, from the causes it chains, and from httpx's own log records
(`execution/brokers/secrets.py`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, TypeVar
from urllib.parse import quote, urlsplit

import httpx

from execution.brokers.deadline import (
    DeadlineTransport,
    bounded_timeout,
    call_deadline,
    read_within,
)
from execution.brokers.matching import order_mismatch
from execution.brokers.secrets import SecretScrubber
from execution.errors import (
    BrokerRejectedError,
    BrokerTransientError,
    OrderNotCancelableError,
    SettingsError,
)
from execution.models import BrokerOrder, OrderRequest, decimal_text
from execution.settings import (
    ALPACA_PAPER_URL,
    Settings,
    alpaca_url_is_paper,
    check_alpaca_keys,
    check_plain_url,
)
from execution.telemetry import emit
from execution.text import bounded_printable

_Read = TypeVar("_Read")

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = httpx.Timeout(connect=3.0, read=10.0, write=5.0, pool=3.0)
"""Bounds on every request: well inside the function timeout, so a hung broker is a retry."""
DEFAULT_DEADLINE_SECONDS = 10.0
"""The overall deadline of one call (`BROKER_TIMEOUT_SECONDS`): connect, send and whole answer."""

DUPLICATE_MESSAGE = "client_order_id must be unique"
ORDER_NOT_FOUND = "order not found"
_TRANSIENT_STATUSES = frozenset({408, 429})
_WRONG_URL_STATUSES = frozenset({404, 405})
"""No such endpoint (or not with this method): APCA_API_BASE_URL is wrong, not the request."""
_ACCOUNT_REFUSALS = ("buying power", "insufficient", "pattern day", "not enough")
"""Words of a 403 that refuses the order for the account's state, not our keys."""
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_MAX_MESSAGE_CHARS = 300
LIST_PAGE_SIZE = 500
"""Alpaca's largest `limit` for `GET /v2/orders`: the fewest requests per listing."""
_ONE_TICK = timedelta(microseconds=1)


class AlpacaBroker:
    """Places, finds and cancels orders at Alpaca; dedupes on `client_order_id`."""

    def __init__(
        self,
        *,
        key_id: str,
        secret_key: str,
        base_url: str = ALPACA_PAPER_URL,
        client: httpx.Client | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        list_page_size: int = LIST_PAGE_SIZE,
        deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
    ) -> None:
        """`client`: an injected one keeps its transport, so only `read_within` bounds a trickle
        (between chunks); the client built here bounds every socket operation exactly."""
        check_alpaca_keys(key_id, secret_key)
        self._base_url = _normalise_base_url(base_url)
        self._scrubber = SecretScrubber((key_id, secret_key))
        self._scrubber.scrub_http_logs()
        self._headers = {"APCA-API-KEY-ID": key_id, "APCA-API-SECRET-KEY": secret_key}
        # Passed on every request, so the bounds hold whatever the injected client's defaults.
        self._timeout = timeout
        self._deadline_seconds = deadline_seconds
        self._owns_client = client is None
        self._client = (
            client
            if client is not None
            else httpx.Client(timeout=timeout, transport=DeadlineTransport())
        )
        self._is_paper = alpaca_url_is_paper(self._base_url)
        if not 1 <= list_page_size <= LIST_PAGE_SIZE:
            raise SettingsError(f"list_page_size must be 1..{LIST_PAGE_SIZE}")
        self._page_size = list_page_size

    @classmethod
    def from_settings(
        cls, settings: Settings, *, client: httpx.Client | None = None
    ) -> AlpacaBroker:
        """Build from `APCA_API_KEY_ID`, `APCA_API_SECRET_KEY` and `APCA_API_BASE_URL`."""
        return cls(
            key_id=settings.alpaca_key_id or "",
            secret_key=settings.alpaca_secret_key or "",
            base_url=settings.alpaca_base_url,
            client=client,
            timeout=httpx.Timeout(
                connect=min(3.0, settings.broker_timeout_seconds),
                read=settings.broker_timeout_seconds,
                write=min(5.0, settings.broker_timeout_seconds),
                pool=min(3.0, settings.broker_timeout_seconds),
            ),
            deadline_seconds=settings.broker_timeout_seconds,
        )

    @property
    def is_paper(self) -> bool:
        """True only for Alpaca's paper endpoint (`paper-api.alpaca.markets`)."""
        return self._is_paper

    def close(self) -> None:
        """Close the HTTP client if this broker built it (an injected one belongs to its owner)."""
        if self._owns_client:
            self._client.close()

    def place_order(self, order: OrderRequest) -> BrokerOrder:
        """Place `order`, or return the existing order with the same `client_order_id`."""
        # One deadline for the whole call, the lookup after a duplicate answer included.
        with call_deadline(self._deadline_seconds):
            body = _order_body(order)
            response = self._send("POST", "/v2/orders", order.client_order_id, json=body)
            if response.is_success:
                return self._order_from(response, order.client_order_id, "POST /v2/orders")
            message = self._message(response)
            if _is_duplicate(response.status_code, message):
                return self._resolve_duplicate(order)
            self._raise_for(response, message, order.client_order_id, "POST /v2/orders")

    def get_order_by_client_order_id(
        self, tenant_id: str, broker_account_id: str, client_order_id: str
    ) -> BrokerOrder | None:
        """The order placed under `client_order_id`, or None where Alpaca says it has none."""
        what = "GET /v2/orders:by_client_order_id"
        response = self._send(
            "GET",
            "/v2/orders:by_client_order_id",
            client_order_id,
            params={"client_order_id": client_order_id},
        )
        if response.is_success:
            return self._order_from(response, client_order_id, what)
        message = self._message(response)
        # Only Alpaca's own "order not found" means none: a 404 from a wrong base URL or a proxy
        # must not let a retry conclude that an earlier attempt placed nothing.
        if response.status_code == 404 and ORDER_NOT_FOUND in message.lower():
            return None
        self._raise_for(response, message, client_order_id, what)

    def get_order(
        self, tenant_id: str, broker_account_id: str, broker_order_id: str
    ) -> BrokerOrder | None:
        """The order with Alpaca's id `broker_order_id`, or None where Alpaca answers 404
        "order not found"."""
        what = "GET /v2/orders/{id}"
        response = self._send("GET", f"/v2/orders/{quote(broker_order_id, safe='')}", None)
        if response.is_success:
            return self._order_from(response, None, what, order_id=broker_order_id)
        message = self._message(response)
        if response.status_code == 404 and ORDER_NOT_FOUND in message.lower():
            return None  # only Alpaca's own words: a 404 of a wrong base URL is no answer
        self._raise_for(response, message, None, what)

    def list_orders(
        self, *, after: datetime, until: datetime | None = None
    ) -> Iterator[BrokerOrder]:
        """Every order submitted after `after` (and before `until`), any status, oldest first.

        Alpaca pages by time, not by cursor: each next page asks for orders after the last one
        seen, less one microsecond, because `after` is exclusive and several orders may share
        that timestamp; the orders seen again are skipped by id. A full page whose orders all
        share one timestamp cannot be paged past (more than `list_page_size` orders within one
        microsecond): that raises `BrokerTransientError` rather than end the listing short.
        """
        seen: set[str] = set()
        cursor = after
        while True:
            page = self._orders_page(cursor, until)
            fresh = [order for order in page if order.broker_order_id not in seen]
            yield from fresh
            seen.update(order.broker_order_id for order in fresh)
            if len(page) < self._page_size:
                return
            last = page[-1].submitted_at
            if not fresh or last is None:
                raise BrokerTransientError(
                    f"alpaca GET /v2/orders: a full page of {len(page)} orders cannot be paged "
                    "past (one submission time or none); the listing is incomplete"
                )
            cursor = last - _ONE_TICK

    def cancel_order(self, tenant_id: str, broker_account_id: str, broker_order_id: str) -> None:
        """Ask Alpaca to cancel an open order (404 rejected; 422 "not cancelable")."""
        response = self._send("DELETE", f"/v2/orders/{quote(broker_order_id, safe='')}", None)
        if response.is_success:
            return
        refusal = OrderNotCancelableError if response.status_code == 422 else BrokerRejectedError
        self._raise_for(
            response, self._message(response), None, "DELETE /v2/orders/{id}", rejected=refusal
        )

    # -- internals -------------------------------------------------------------------------

    def _send(
        self, method: str, path: str, client_order_id: str | None, **kwargs: Any
    ) -> httpx.Response:
        """One request with the keys, inside the call's deadline; no complete answer: transient."""
        with call_deadline(self._deadline_seconds) as deadline:
            try:
                return self._exchange(method, path, deadline, **kwargs)
            except Exception as exc:  # whatever the HTTP stack raised, it must leave scrubbed
                failure = exc
        # Raised outside the `except`, so the original (which may quote a key) is not chained as
        # __context__ either. Connect and pool failures happen before anything is sent, but a
        # timeout or a dropped connection may follow an accepted order: all are outcome unknown.
        error = self._scrub(f"{type(failure).__name__}: {failure}")
        emit(
            logger,
            "exec.broker.alpaca.transport_error",
            logging.WARNING,
            method=method,
            path=path,
            client_order_id=client_order_id,
            error=error,
        )
        raise BrokerTransientError(
            f"alpaca {method} {path}: {error} (outcome unknown; a retry with the same "
            "client_order_id resolves it)"
        ) from self._scrubber.scrubbed_cause(failure)

    def _exchange(self, method: str, path: str, deadline: float, **kwargs: Any) -> httpx.Response:
        """Send, and read the whole answer by `deadline` (streamed: a trickle cannot hold us)."""
        request = self._client.build_request(
            method,
            self._base_url + path,
            headers=self._headers,
            timeout=bounded_timeout(self._timeout),
            **kwargs,
        )
        streamed = self._client.send(request, stream=True)
        try:
            raw = read_within(streamed, deadline)
        finally:
            streamed.close()  # unread: the connection is closed, so the broker sees us go
        # A complete, ordinary response (the body decoded as its headers say), read in full.
        return httpx.Response(
            streamed.status_code, headers=streamed.headers, content=raw, request=request
        )

    def _resolve_duplicate(self, order: OrderRequest) -> BrokerOrder:
        """Alpaca already holds an order under our id: return it if it is the same order."""
        try:
            existing = self.get_order_by_client_order_id(
                order.tenant_id, order.broker_account_id, order.client_order_id
            )
        except BrokerRejectedError as exc:
            # The order exists; failing to read it must not turn into a terminal "rejected".
            raise BrokerTransientError(
                f"alpaca reports client_order_id {order.client_order_id} in use but the lookup "
                f"failed: {exc}"
            ) from exc
        if existing is None:
            raise BrokerTransientError(
                f"alpaca reports client_order_id {order.client_order_id} in use but cannot find "
                "it yet; a retry looks again"
            )
        mismatch = order_mismatch(order, existing)
        if mismatch is not None:
            # The order's fields are the broker's words: scrubbed like any message of theirs.
            raise BrokerRejectedError(
                self._scrub(
                    f"client_order_id {order.client_order_id} is already used at alpaca by a "
                    f"different order (id {existing.broker_order_id}: {mismatch})"
                )
            )
        emit(
            logger,
            "exec.broker.alpaca.duplicate_resolved",
            client_order_id=order.client_order_id,
            broker_order_id=existing.broker_order_id,
            status=existing.status,
        )
        return existing

    def _orders_page(self, after: datetime, until: datetime | None) -> list[BrokerOrder]:
        """One page of the listing: every status, oldest first, submitted after `after`."""
        what = "GET /v2/orders"
        params = {
            "status": "all",
            "direction": "asc",
            "limit": str(self._page_size),
            "after": _rfc3339(after),
        }
        if until is not None:
            params["until"] = _rfc3339(until)
        response = self._send("GET", "/v2/orders", None, params=params)
        if not response.is_success:
            self._raise_for(response, self._message(response), None, what)
        return self._readable(response, None, what, lambda: _orders_from(response.json()))

    def _order_from(
        self,
        response: httpx.Response,
        client_order_id: str | None,
        what: str,
        *,
        order_id: str | None = None,
    ) -> BrokerOrder:
        """Read the order a 2xx answer names; an unreadable one, or one naming another order
        than the `client_order_id` or `order_id` asked about, is outcome unknown."""
        return self._readable(
            response,
            client_order_id,
            what,
            lambda: _asked_order(
                _broker_order(_object(response.json())), client_order_id, order_id
            ),
        )

    def _readable(
        self,
        response: httpx.Response,
        client_order_id: str | None,
        what: str,
        read: Callable[[], _Read],
    ) -> _Read:
        """`read()` of an answer; one that cannot be read is outcome unknown: transient.

        An answer that quotes one of our keys (a proxy echoing our headers into an order's
        `symbol` or `id`) is no broker's order: read, its fields would reach records, logs and
        dead letters unscrubbed, an `id` as the recorded order id.
        """
        try:
            if self._scrub(response.text) != response.text:
                raise ValueError("the answer quotes our API key: no broker writes that")
            return read()
        # Reading is pure, so whatever it raises means unreadable: not only ValueError and the
        # like, but a time past year 9999 in UTC (OverflowError) or JSON nested past the
        # recursion limit (RecursionError), which must not escape our error tree.
        except Exception as exc:
            failure = exc  # may quote the answer, which may echo a key: raised scrubbed below
        # Raised outside the `except`, so the original is not chained as __context__ either.
        emit(
            logger,
            "exec.broker.alpaca.malformed_answer",
            logging.WARNING,
            client_order_id=client_order_id,
            status=response.status_code,
            error=self._scrub(repr(failure)),
        )
        remedy = (
            "outcome unknown, a retry with the same client_order_id resolves it"
            if client_order_id is not None
            else "ask again"
        )
        raise BrokerTransientError(
            f"alpaca {what} answered {response.status_code} with an unreadable order "
            f"({type(failure).__name__}); {remedy}"
        ) from self._scrubber.scrubbed_cause(failure)

    def _raise_for(
        self,
        response: httpx.Response,
        message: str,
        client_order_id: str | None,
        what: str,
        *,
        rejected: type[BrokerRejectedError] = BrokerRejectedError,
    ) -> NoReturn:
        status = response.status_code
        # 401/403 say our keys or base URL are wrong (a rotation, a typo), not that the order
        # is; so does a 404/405 that is not Alpaca's "order not found" (a wrong path in
        # APCA_API_BASE_URL: Alpaca refuses an unknown symbol with 422). Retried, and logged at
        # ERROR for a person, until the fix lands or the intent is stale, rather than rejecting
        # every intent of that window for good.
        event = _configuration_refused(status, message)
        transient = bool(event) or status in _TRANSIENT_STATUSES or not 400 <= status < 500
        emit(
            logger,
            f"exec.broker.alpaca.{event or 'error_answer'}",
            logging.ERROR if event else logging.WARNING,
            what=what,
            status=status,
            client_order_id=client_order_id,
            transient=transient,
            message=message,
        )
        text = f"alpaca {what} answered {status}: {message}"
        if transient:
            raise BrokerTransientError(text)
        raise rejected(text)

    def _message(self, response: httpx.Response) -> str:
        """The broker's own words: `message` from its JSON error body, else the raw text."""
        try:
            data = response.json()
        except (ValueError, RecursionError):  # not JSON, or nested past the recursion limit
            data = None
        if isinstance(data, dict) and isinstance(data.get("message"), str):
            text: str = data["message"]
        else:
            text = response.text.strip() or response.reason_phrase
        # Scrubbed whole, then cut: a cut first could leave part of a key behind. Printable: it
        # is stored on the record and printed to operators (no terminal escape runs there).
        return bounded_printable(self._scrub(text), _MAX_MESSAGE_CHARS)

    def _scrub(self, text: str) -> str:
        return self._scrubber.scrub(text)


def _orders_from(data: Any) -> list[BrokerOrder]:
    """The orders of a listing page."""
    if not isinstance(data, list):
        raise TypeError(f"expected a JSON array, got {type(data).__name__}")
    return [_broker_order(_object(item)) for item in data]


def _asked_order(
    order: BrokerOrder, client_order_id: str | None, order_id: str | None
) -> BrokerOrder:
    """`order` if it is the one asked about: an answer naming another (a proxy's, a cache's) is
    garbage, never "the broker holds that order under our id"."""
    if client_order_id is not None and order.client_order_id != client_order_id:
        raise ValueError("the answer names another client_order_id than the one asked about")
    if order_id is not None and order.broker_order_id != order_id:
        raise ValueError("the answer names another order id than the one asked about")
    return order


def _order_body(order: OrderRequest) -> dict[str, str]:
    body = {
        "symbol": order.symbol,
        "qty": decimal_text(order.qty),
        "side": order.side,
        "type": order.order_type,
        "time_in_force": order.time_in_force,
        "client_order_id": order.client_order_id,
    }
    if order.order_type == "limit" and order.limit_price is not None:
        body["limit_price"] = decimal_text(order.limit_price)
    return body


def _object(data: object) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise TypeError(f"expected a JSON object, got {type(data).__name__}")
    return data


def _broker_order(data: dict[str, Any]) -> BrokerOrder:
    submitted = data.get("submitted_at")
    return BrokerOrder(
        broker_order_id=_text(data, "id"),
        client_order_id=_text(data, "client_order_id"),
        symbol=_text(data, "symbol"),
        side=_text(data, "side"),
        # A notional order has no share quantity until it fills; ours always send qty.
        qty=_amount(data, "qty") or 0.0,
        status=_text(data, "status"),
        filled_avg_price=_amount(data, "filled_avg_price"),
        order_type=_text(data, "type" if data.get("type") is not None else "order_type"),
        limit_price=_amount(data, "limit_price"),
        time_in_force=_text(data, "time_in_force"),
        submitted_at=_parse_timestamp(submitted) if submitted is not None else None,
        filled_qty=_amount(data, "filled_qty"),
    )


def _amount(data: dict[str, Any], key: str) -> float | None:
    """A decimal Alpaca writes as a string (or a number): finite and not negative, or None."""
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise TypeError(f"field {key!r} must be a decimal")
    amount = float(value)
    if not math.isfinite(amount) or amount < 0:
        raise ValueError(f"field {key!r} must be finite and not negative")
    return amount


def _parse_timestamp(value: object) -> datetime:
    """Alpaca's RFC 3339 timestamps (`...Z`, up to nanoseconds) as aware UTC datetimes."""
    if not isinstance(value, str):
        raise TypeError("a timestamp must be a string")
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {value!r} has no time zone")
    return moment.astimezone(UTC)


def _rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("listing bounds must be aware datetimes")
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _text(data: dict[str, Any], key: str) -> str:
    value = data[key]
    if not isinstance(value, str) or not value:
        raise TypeError(f"field {key!r} must be a non-empty string")
    return value


def _configuration_refused(status: int, message: str) -> str | None:
    """The event naming what of ours an answer refuses (`keys_refused`, `endpoint_refused`), or
    None where it may be about the request itself."""
    if _refuses_keys(status, message):
        return "keys_refused"
    if status in _WRONG_URL_STATUSES and ORDER_NOT_FOUND not in message.lower():
        return "endpoint_refused"
    return None


def _refuses_keys(status: int, message: str) -> bool:
    """401, or a 403 that does not name the account's state (Alpaca's buying-power refusals)."""
    if status == 401:
        return True
    return status == 403 and not any(word in message.lower() for word in _ACCOUNT_REFUSALS)


def _is_duplicate(status: int, message: str) -> bool:
    # Alpaca answers 422 with this message; a 409 can only mean a conflict on the one unique key
    # the body carries, so it gets the same lookup (which proves or disproves it).
    return status == 409 or (status == 422 and DUPLICATE_MESSAGE in message.lower())


def _normalise_base_url(base_url: str) -> str:
    """Strip a trailing `/` or `/v2`; refuse plain HTTP anywhere but loopback (keys in clear)."""
    check_plain_url("APCA_API_BASE_URL", base_url)
    url = base_url.strip().rstrip("/")
    url = url.removesuffix("/v2")
    parts = urlsplit(url)
    if parts.scheme not in {"https", "http"} or not parts.hostname:
        raise SettingsError("APCA_API_BASE_URL is not an http(s) URL (value not shown).")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK_HOSTS:
        raise SettingsError(
            "APCA_API_BASE_URL would send the API keys unencrypted (value not shown); use https."
        )
    return url
