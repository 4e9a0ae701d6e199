"""A local Alpaca Trading API v2 sandbox on loopback, for the demo and tests; never for trading.

A real HTTP server that answers as Alpaca does for what we use, and that a demo or a test can make
misbehave. Alpaca's own SDK (alpaca-py's `TradingClient` with `url_override`) drives it in
`tests/contract/test_alpaca_sdk_sandbox.py`, which pins the shapes below.

Endpoints: `POST /v2/orders` (qty or notional, each as a JSON number or a string; market or limit),
`GET /v2/orders` (`status` open|closed|all, `after`/`until` exclusive bounds on `submitted_at`,
`limit` ≤ 500, `direction` asc|desc, `symbols`, `side`), `GET /v2/orders/{id}`,
`GET /v2/orders:by_client_order_id`, `DELETE /v2/orders/{id}` (204; 422 "order is not cancelable"
once closed; 404 unknown) and `GET /v2/account`. It checks the key headers, stores orders by
`client_order_id` and refuses a second one with Alpaca's 422 "client_order_id must be unique".
Crypto pairs are written as Alpaca writes them (`BTCUSD` → `BTC/USD`).

Faults are queued per HTTP method and each one is used by the next request of that method: answer
a status, accept the order and then hang past the client's read timeout, accept it and answer
malformed JSON, accept it and answer with the order's fields changed, or accept it and drop the
connection. A fault can also be aimed at one order
(`inject_for_order`): the next POST carrying that `client_order_id` gets it, whatever else runs
(`no_fault()` so aimed shields an order from the faults queued for its method).
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import uuid
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

KEY_ID = "PKTESTKEYID0000000001"
SECRET_KEY = "test-secret-key-s3cr3t-DO-NOT-LOG"

_SIDES = {"buy", "sell"}
_TYPES = {"market", "limit"}
_TIME_IN_FORCE = {"day", "gtc", "ioc", "fok", "opg", "cls"}
CLOSED_STATUSES = frozenset({"filled", "canceled", "expired", "rejected", "replaced"})
"""Alpaca's final order states: `status=closed` lists these, `status=open` every other one."""
_UNCANCELABLE = CLOSED_STATUSES | {"pending_cancel", "done_for_day"}
_AMOUNTS = ("qty", "notional", "limit_price")
_MAX_LIMIT = 500
_DEFAULT_LIMIT = 50
_CRYPTO_PAIR = re.compile(r"(BTC|ETH|LTC|BCH|SOL|DOGE|AVAX|LINK|UNI|AAVE)(USD|USDT|USDC)")

Json = dict[str, Any] | list[dict[str, Any]] | None


@dataclass(frozen=True)
class Fault:
    """What the next request of one method gets instead of a normal answer."""

    status: int | None = None
    """Answer this status with `message` (after handling the request only if `accept`)."""
    message: str = ""
    accept: bool = False
    """Handle the request for real first (a POST stores the order), then misbehave."""
    hang_seconds: float = 0.0
    """Sleep this long before answering (past the client's read timeout)."""
    malformed: bool = False
    """Answer 200 with a body that is not JSON."""
    drop: bool = False
    """Close the connection without answering."""
    changes: tuple[tuple[str, Any], ...] = ()
    """Answer the order with these fields changed (a proxy's or a cache's answer: not ours)."""


def status(code: int, message: str, *, accept: bool = False) -> Fault:
    """Answer `code` with Alpaca's error body `{"code": ..., "message": message}`."""
    return Fault(status=code, message=message, accept=accept)


def hang_after_accept(seconds: float = 3.0) -> Fault:
    """Take the order, then answer only after `seconds` (or at shutdown)."""
    return Fault(accept=True, hang_seconds=seconds)


def malformed_json_after_accept() -> Fault:
    """Take the order, then answer 200 with a truncated JSON body."""
    return Fault(accept=True, malformed=True)


def no_fault() -> Fault:
    """Answer normally: aimed at one order (`inject_for_order`), it shields that order from the
    faults queued for its method."""
    return Fault(accept=True)


def changed_after_accept(**fields: Any) -> Fault:
    """Take the order, then answer 200 with the order as if `fields` were different (another
    `id`, `qty`...): what a proxy or a cache answering for another request would send."""
    return Fault(accept=True, changes=tuple(fields.items()))


def drop_after_accept() -> Fault:
    """Take the order, then close the connection without a response."""
    return Fault(accept=True, drop=True)


@dataclass(frozen=True)
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: dict[str, Any] | None


def _system_clock() -> datetime:
    return datetime.now(UTC)


@dataclass
class _State:
    key_id: str
    secret_key: str
    clock: Callable[[], datetime]
    account_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    lock: threading.Lock = field(default_factory=threading.Lock)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    """By client order id, in submission order (dicts keep insertion order)."""
    faults: dict[str, deque[Fault]] = field(default_factory=lambda: defaultdict(deque))
    order_faults: dict[str, Fault] = field(default_factory=dict)
    """By client order id: the fault the next POST of that order gets, ahead of `faults`."""
    seen: list[Seen] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    stored: threading.Condition = field(init=False)
    """Notified (under `lock`) whenever an order is stored."""

    def __post_init__(self) -> None:
        self.stored = threading.Condition(self.lock)

    def by_id(self, order_id: str) -> dict[str, Any] | None:
        return next((o for o in self.orders.values() if o["id"] == order_id), None)

    def now(self) -> str:
        return _timestamp(self.clock())


class AlpacaSandbox:
    """The server; use as a context manager. `base_url` is what `APCA_API_BASE_URL` would be."""

    def __init__(
        self,
        *,
        key_id: str = KEY_ID,
        secret_key: str = SECRET_KEY,
        clock: Callable[[], datetime] = _system_clock,
    ) -> None:
        self._state = _State(key_id=key_id, secret_key=secret_key, clock=clock)
        self._httpd = _Server(("127.0.0.1", 0), _Handler, self._state)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:<port>`."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> AlpacaSandbox:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._state.stopping.set()  # wakes every hanging handler at once
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def inject(self, method: str, *faults: Fault) -> None:
        """Queue `faults` for the next requests of `method` (`POST`, `GET`, `DELETE`), in order."""
        with self._state.lock:
            self._state.faults[method.upper()].extend(faults)

    def inject_next(self, method: str, *faults: Fault) -> None:
        """Queue `faults` ahead of every fault already queued for `method`, in order."""
        with self._state.lock:
            self._state.faults[method.upper()].extendleft(reversed(faults))

    def inject_for_order(self, client_order_id: str, fault: Fault) -> None:
        """Give `fault` to the next POST of `client_order_id` only (ahead of the method's queue)."""
        with self._state.lock:
            self._state.order_faults[client_order_id] = fault

    def clear_faults(self) -> None:
        """Drop every fault not used yet: from now on the sandbox answers normally."""
        with self._state.lock:
            self._state.faults.clear()
            self._state.order_faults.clear()

    def queued(self, method: str) -> list[Fault]:
        """The faults queued for `method` and not used yet, next first."""
        with self._state.lock:
            return list(self._state.faults[method.upper()])

    @property
    def orders(self) -> dict[str, dict[str, Any]]:
        """A copy of the stored orders, by `client_order_id`."""
        with self._state.lock:
            return {coid: dict(order) for coid, order in self._state.orders.items()}

    def wait_for_orders(self, count: int, timeout: float = 30.0) -> dict[str, dict[str, Any]]:
        """The stored orders once there are at least `count` (or at `timeout`, whatever is
        stored): a client that timed out may return before the server's handler stored its
        order, so a test waits for the handler, not for a time."""
        with self._state.stored:
            self._state.stored.wait_for(lambda: len(self._state.orders) >= count, timeout)
        return self.orders

    @property
    def seen(self) -> list[Seen]:
        """Every request received so far, in order."""
        with self._state.lock:
            return list(self._state.seen)

    def posted_client_order_ids(self) -> list[str]:
        """The `client_order_id` of every order POSTed, duplicates included."""
        return [
            str(s.body.get("client_order_id"))
            for s in self.seen
            if s.method == "POST" and s.body is not None
        ]

    def close(self, client_order_id: str, status: str, *, filled_qty: str = "0") -> None:
        """Close a stored order as the broker does on its own, after it was accepted: `rejected`
        (its checks ran late), `canceled` or `expired` (its day ended), `filled_qty` filled."""
        with self._state.lock:
            order = self._state.orders[client_order_id]
            now = self._state.now()
            stamp = {"rejected": "failed_at", "canceled": "canceled_at"}.get(status, "expired_at")
            order.update(status=status, filled_qty=filled_qty, updated_at=now)
            order[stamp] = now

    def fill(self, client_order_id: str, price: str) -> None:
        """Fill a stored order completely at `price`."""
        with self._state.lock:
            order = self._state.orders[client_order_id]
            now = self._state.now()
            order.update(
                status="filled",
                filled_qty=order["qty"],
                filled_avg_price=price,
                filled_at=now,
                updated_at=now,
            )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], state: _State
    ) -> None:
        self.state = state
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and hung up is part of the scenario, not a server bug.
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_POST(self) -> None:
        self._dispatch()

    def do_GET(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        state = self.server.state
        parts = urlsplit(self.path)
        body = self._read_body()
        with state.lock:
            state.seen.append(
                Seen(
                    method=self.command,
                    path=parts.path,
                    query=parse_qs(parts.query),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body if isinstance(body, dict) else None,
                )
            )
        if (
            self.headers.get("APCA-API-KEY-ID") != state.key_id
            or self.headers.get("APCA-API-SECRET-KEY") != state.secret_key
        ):
            self._answer(401, {"code": 40110000, "message": "request is not authorized"})
            return
        with state.lock:
            fault = _take_fault(state, self.command, body)
        if fault is not None and not fault.accept and fault.status is not None:
            self._answer(fault.status, {"code": fault.status * 100000, "message": fault.message})
            return

        code, payload = _route(state, self.command, parts.path, parse_qs(parts.query), body)

        if fault is None:
            self._answer(code, payload)
        elif fault.hang_seconds:
            state.stopping.wait(fault.hang_seconds)
            self._answer(code, payload)
        elif fault.malformed:
            self._answer_raw(200, b'{"id": "' + str(uuid.uuid4()).encode() + b'", "status"')
        elif fault.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
        elif fault.status is not None:
            self._answer(fault.status, {"code": fault.status * 100000, "message": fault.message})
        elif fault.changes and isinstance(payload, dict):
            self._answer(code, {**payload, **dict(fault.changes)})
        else:
            self._answer(code, payload)

    def _read_body(self) -> object:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw

    def _answer(self, code: int, payload: Json) -> None:
        raw = b"" if payload is None else json.dumps(payload).encode()
        self._answer_raw(code, raw)

    def _answer_raw(self, code: int, raw: bytes) -> None:
        with contextlib.suppress(OSError):
            self.send_response(code)
            if code != 204:
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            if code != 204:
                self.wfile.write(raw)
            self.wfile.flush()


def _take_fault(state: _State, method: str, body: object) -> Fault | None:
    """The fault this request gets: its order's own first, else the next of its method's."""
    if method == "POST" and isinstance(body, dict):
        own = state.order_faults.pop(str(body.get("client_order_id")), None)
        if own is not None:
            return own
    queue = state.faults[method]
    return queue.popleft() if queue else None


# --- the API ---------------------------------------------------------------------------------


def _route(
    state: _State, method: str, path: str, query: dict[str, list[str]], body: object
) -> tuple[int, Json]:
    if path == "/v2/orders":
        if method == "POST":
            return _create(state, body)
        if method == "GET":
            return _list(state, query)
    if method == "GET" and path == "/v2/orders:by_client_order_id":
        coid = (query.get("client_order_id") or [""])[0]
        with state.lock:
            order = state.orders.get(coid)
            return (200, dict(order)) if order else (404, _error(404, "order not found"))
    if path.startswith("/v2/orders/"):
        order_id = unquote(path.removeprefix("/v2/orders/"))
        if method == "GET":
            with state.lock:
                order = state.by_id(order_id)
                return (200, dict(order)) if order else (404, _error(404, "order not found"))
        if method == "DELETE":
            return _cancel(state, order_id)
    if method == "GET" and path == "/v2/account":
        return 200, _account(state)
    return 404, _error(404, "endpoint not found")


def _create(state: _State, body: object) -> tuple[int, dict[str, Any]]:
    fields = _order_fields(body)
    if isinstance(fields, str):
        return 422, _error(422, fields)
    coid = fields["client_order_id"] or str(uuid.uuid4())
    with state.lock:
        if coid in state.orders:
            return 422, {"code": 40010001, "message": "client_order_id must be unique"}
        now = state.now()
        order: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "client_order_id": coid,
            "created_at": now,
            "updated_at": now,
            "submitted_at": now,
            "filled_at": None,
            "canceled_at": None,
            "expired_at": None,
            "failed_at": None,
            "asset_id": str(uuid.uuid5(uuid.NAMESPACE_URL, fields["symbol"])),
            "filled_qty": "0",
            "filled_avg_price": None,
            "order_class": "simple",
            "order_type": fields["type"],
            "stop_price": None,
            "status": "accepted",
            "extended_hours": False,
            "legs": None,
            **fields,
        }
        state.orders[coid] = order
        state.stored.notify_all()
        return 200, dict(order)


def _list(state: _State, query: dict[str, list[str]]) -> tuple[int, Json]:
    params = _listing_params(query)
    if isinstance(params, str):
        return 422, _error(422, params)
    wanted, limit, after, until, descending, symbols, side = params
    with state.lock:
        orders = [dict(o) for o in state.orders.values()]
    chosen = [
        o
        for o in orders
        if wanted(o["status"])
        and (after is None or _parse_time(o["submitted_at"]) > after)
        and (until is None or _parse_time(o["submitted_at"]) < until)
        and (not symbols or o["symbol"] in symbols)
        and (side is None or o["side"] == side)
    ]
    # Submission order among equal timestamps, as a stable sort keeps it.
    chosen.sort(key=lambda o: _parse_time(o["submitted_at"]), reverse=descending)
    return 200, chosen[:limit]


_Listing = tuple[
    Callable[[str], bool], int, datetime | None, datetime | None, bool, set[str], str | None
]


def _listing_params(query: dict[str, list[str]]) -> _Listing | str:
    """The listing's filters from the query string, or Alpaca-like words on what is wrong."""

    def one(name: str) -> str | None:
        values = query.get(name)
        return values[-1] if values else None

    status_filter = one("status") or "open"
    statuses: dict[str, Callable[[str], bool]] = {
        "open": lambda s: s not in CLOSED_STATUSES,
        "closed": lambda s: s in CLOSED_STATUSES,
        "all": lambda s: True,
    }
    if status_filter not in statuses:
        return "invalid status: must be open, closed or all"
    try:
        limit = int(one("limit") or _DEFAULT_LIMIT)
    except ValueError:
        return "invalid limit"
    if not 1 <= limit <= _MAX_LIMIT:
        return f"limit must be between 1 and {_MAX_LIMIT}"
    try:
        after, until = (_query_time(one(name)) for name in ("after", "until"))
    except ValueError:
        return "invalid timestamp for after or until"
    direction = one("direction") or "desc"
    if direction not in {"asc", "desc"}:
        return "invalid direction: must be asc or desc"
    symbols = {_alpaca_symbol(s) for s in (one("symbols") or "").split(",") if s}
    side = one("side")
    if side is not None and side not in _SIDES:
        return "invalid side"
    return statuses[status_filter], limit, after, until, direction == "desc", symbols, side


def _cancel(state: _State, order_id: str) -> tuple[int, dict[str, Any] | None]:
    with state.lock:
        order = state.by_id(order_id)
        if order is None:
            return 404, _error(404, "order not found")
        if order["status"] in _UNCANCELABLE:
            return 422, _error(422, "order is not cancelable")
        now = state.now()
        order.update(status="canceled", canceled_at=now, updated_at=now)
        return 204, None


def _account(state: _State) -> dict[str, Any]:
    cash = "100000"
    return {
        "id": state.account_id,
        "account_number": "PA0SANDBOX01",
        "status": "ACTIVE",
        "crypto_status": "ACTIVE",
        "currency": "USD",
        "buying_power": cash,
        "cash": cash,
        "portfolio_value": cash,
        "equity": cash,
        "last_equity": cash,
        "multiplier": "1",
        "pattern_day_trader": False,
        "trading_blocked": False,
        "transfers_blocked": False,
        "account_blocked": False,
        "trade_suspended_by_user": False,
        "shorting_enabled": False,
        "daytrade_count": 0,
        "created_at": "2026-01-01T00:00:00Z",
    }


# --- validation ------------------------------------------------------------------------------


def _order_fields(body: object) -> dict[str, Any] | str:
    """The order as Alpaca stores it (decimals as strings), or words on what is wrong."""
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    for name in ("symbol", "side", "type", "time_in_force"):
        if not isinstance(body.get(name), str) or not body[name]:
            return f"{name} is required"
    if body["side"] not in _SIDES:
        return "invalid side"
    if body["type"] not in _TYPES:
        return "invalid order type"
    if body["time_in_force"] not in _TIME_IN_FORCE:
        return "invalid time_in_force"
    coid = body.get("client_order_id")
    if coid is not None and (not isinstance(coid, str) or len(coid) > 128):
        return "client_order_id must be a string of no more than 128 characters"
    amounts = {name: _positive_decimal(body.get(name)) for name in _AMOUNTS}
    for name, amount in amounts.items():
        if amount == "":
            return f"invalid {name}"
    qty, notional, limit = amounts["qty"], amounts["notional"], amounts["limit_price"]
    if (qty is None) == (notional is None):
        return "qty or notional is required, not both"
    if notional is not None and body["type"] != "market":
        return "notional orders must be market orders"
    if body["type"] == "limit" and limit is None:
        return "limit_price is required for limit orders"
    if body["type"] == "market" and limit is not None:
        return "limit_price must not be given for market orders"
    symbol = _alpaca_symbol(body["symbol"])
    return {
        "symbol": symbol,
        "asset_class": "crypto" if "/" in symbol else "us_equity",
        "side": body["side"],
        "type": body["type"],
        "time_in_force": body["time_in_force"],
        "client_order_id": coid,
        "qty": qty,
        "notional": notional,
        "limit_price": limit,
    }


def _positive_decimal(value: object) -> str | None:
    """A JSON number or numeric string as Alpaca echoes it ("2.5"); None absent; "" invalid."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return ""
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return ""
    if not amount.is_finite() or amount <= 0:
        return ""
    return format(amount.normalize(), "f")


def _alpaca_symbol(symbol: str) -> str:
    """Alpaca writes crypto pairs with a slash (`BTC/USD`), whichever way they were sent."""
    match = _CRYPTO_PAIR.fullmatch(symbol.upper().replace("/", ""))
    return f"{match[1]}/{match[2]}" if match else symbol


def _timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds, as Alpaca writes them: `2026-01-05T14:30:00.000000Z`."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _query_time(text: str | None) -> datetime | None:
    # A `+` left unencoded in a query string arrives as a space.
    return None if text is None else _parse_time(text.replace(" ", "+"))


def _error(code: int, message: str) -> dict[str, Any]:
    return {"code": code * 100000, "message": message}
