"""A local Alpaca Trading API v2 sandbox on loopback, for the demo and tests; never for trading.

A real HTTP server that the demo or a test can make misbehave.

It speaks the three endpoints `AlpacaBroker` uses (`POST /v2/orders`,
`GET /v2/orders:by_client_order_id`, `DELETE /v2/orders/{id}`), checks the key headers, stores
orders by `client_order_id` and refuses a second one with Alpaca's 422
"client_order_id must be unique". Faults are queued per HTTP method and each one is used by the
next request of that method: answer a status, accept the order and then hang past the client's
read timeout, accept it and answer malformed JSON, or accept it and drop the connection.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import uuid
from collections import defaultdict, deque
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
_OPEN_STATUSES = {"new", "accepted", "pending_new", "partially_filled"}


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


def status(code: int, message: str, *, accept: bool = False) -> Fault:
    """Answer `code` with Alpaca's error body `{"code": ..., "message": message}`."""
    return Fault(status=code, message=message, accept=accept)


def hang_after_accept(seconds: float = 3.0) -> Fault:
    """Take the order, then answer only after `seconds` (or at shutdown)."""
    return Fault(accept=True, hang_seconds=seconds)


def malformed_json_after_accept() -> Fault:
    """Take the order, then answer 200 with a truncated JSON body."""
    return Fault(accept=True, malformed=True)


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


@dataclass
class _State:
    key_id: str
    secret_key: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    faults: dict[str, deque[Fault]] = field(default_factory=lambda: defaultdict(deque))
    seen: list[Seen] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)


class AlpacaSandbox:
    """The server; use as a context manager. `base_url` is what `APCA_API_BASE_URL` would be."""

    def __init__(self, *, key_id: str = KEY_ID, secret_key: str = SECRET_KEY) -> None:
        self._state = _State(key_id=key_id, secret_key=secret_key)
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

    def queued(self, method: str) -> list[Fault]:
        """The faults queued for `method` and not used yet, next first."""
        with self._state.lock:
            return list(self._state.faults[method.upper()])

    @property
    def orders(self) -> dict[str, dict[str, Any]]:
        """A copy of the stored orders, by `client_order_id`."""
        with self._state.lock:
            return {coid: dict(order) for coid, order in self._state.orders.items()}

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

    def fill(self, client_order_id: str, price: str) -> None:
        """Fill a stored order completely at `price`."""
        with self._state.lock:
            order = self._state.orders[client_order_id]
            order.update(status="filled", filled_qty=order["qty"], filled_avg_price=price)


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
            queue = state.faults[self.command]
            fault = queue.popleft() if queue else None
        if fault is not None and not fault.accept and fault.status is not None:
            self._answer(fault.status, {"code": fault.status * 100000, "message": fault.message})
            return

        code, payload = self._route(parts.path, parse_qs(parts.query), body)

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

    def _route(
        self, path: str, query: dict[str, list[str]], body: object
    ) -> tuple[int, dict[str, Any] | None]:
        if self.command == "POST" and path == "/v2/orders":
            return self._create(body)
        if self.command == "GET" and path == "/v2/orders:by_client_order_id":
            coid = (query.get("client_order_id") or [""])[0]
            with self.server.state.lock:
                order = self.server.state.orders.get(coid)
                return (200, dict(order)) if order else (404, _error(404, "order not found"))
        if self.command == "DELETE" and path.startswith("/v2/orders/"):
            return self._cancel(unquote(path.removeprefix("/v2/orders/")))
        return 404, _error(404, "endpoint not found")

    def _create(self, body: object) -> tuple[int, dict[str, Any]]:
        problem = _invalid(body)
        if problem is not None:
            return 422, _error(422, problem)
        assert isinstance(body, dict)
        coid = body["client_order_id"]
        now = datetime.now(UTC).isoformat()
        order: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "client_order_id": coid,
            "created_at": now,
            "submitted_at": now,
            "symbol": body["symbol"],
            "asset_class": "us_equity",
            "qty": body["qty"],
            "filled_qty": "0",
            "filled_avg_price": None,
            "order_class": "",
            "type": body["type"],
            "order_type": body["type"],
            "side": body["side"],
            "time_in_force": body["time_in_force"],
            "limit_price": body.get("limit_price"),
            "stop_price": None,
            "status": "accepted",
            "extended_hours": False,
        }
        with self.server.state.lock:
            if coid in self.server.state.orders:
                return 422, {"code": 40010001, "message": "client_order_id must be unique"}
            self.server.state.orders[coid] = order
            return 200, dict(order)

    def _cancel(self, order_id: str) -> tuple[int, dict[str, Any] | None]:
        with self.server.state.lock:
            for order in self.server.state.orders.values():
                if order["id"] == order_id:
                    if order["status"] not in _OPEN_STATUSES:
                        return 422, _error(422, "order is not cancelable")
                    order["status"] = "canceled"
                    return 204, None
        return 404, _error(404, "order not found")

    def _read_body(self) -> object:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw

    def _answer(self, code: int, payload: dict[str, Any] | None) -> None:
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


def _error(code: int, message: str) -> dict[str, Any]:
    return {"code": code * 100000, "message": message}


def _invalid(body: object) -> str | None:
    """Alpaca's validation, as far as the adapter can get it wrong."""
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    for name in ("symbol", "qty", "side", "type", "time_in_force", "client_order_id"):
        if not isinstance(body.get(name), str) or not body[name]:
            return f"{name} is required (as a string)"
    try:
        if Decimal(body["qty"]) <= 0:
            return "qty must be > 0"
    except InvalidOperation:
        return "invalid qty"
    if body["side"] not in _SIDES:
        return "invalid side"
    if body["type"] not in _TYPES:
        return "invalid order type"
    if body["time_in_force"] not in _TIME_IN_FORCE:
        return "invalid time_in_force"
    if len(body["client_order_id"]) > 128:
        return "client_order_id must be no more than 128 characters"
    limit = body.get("limit_price")
    if body["type"] == "limit":
        if not isinstance(limit, str):
            return "limit_price is required for limit orders (as a string)"
        try:
            Decimal(limit)
        except InvalidOperation:
            return "invalid limit_price"
    elif limit is not None:
        return "limit_price must not be given for market orders"
    return None
