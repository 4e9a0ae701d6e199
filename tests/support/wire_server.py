"""A loopback HTTP server that answers each request with scripted raw bytes.

`devtools/alpaca_sandbox.py` answers as Alpaca does; this one answers as nothing should: a body
trickled a byte at a time, an illegal status or header line, a reason phrase or header that
echoes the caller's keys, silence. Each request takes the next script from the queue (a request
with none left gets a 503), and every connection is closed after its answer.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

Script = Callable[[socket.socket], None]
"""Answers one request on its connection (the request is already read)."""


@dataclass
class Trickle:
    """Sends `prefix` at once, then `raw` one byte every `interval` seconds; records whether the
    client hung up before the last byte."""

    raw: bytes
    interval: float
    prefix: bytes = b""
    sent: int = 0
    client_closed_early: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)

    def __call__(self, conn: socket.socket) -> None:
        try:
            conn.sendall(self.prefix)
            for index in range(len(self.raw)):
                conn.sendall(self.raw[index : index + 1])
                self.sent += 1
                if _peer_closed(conn, self.interval):
                    self.client_closed_early.set()
                    return
        except OSError:  # reset or broken pipe: the client is gone
            self.client_closed_early.set()
        finally:
            self.finished.set()


def _peer_closed(conn: socket.socket, wait: float) -> bool:
    """Wait up to `wait` s; True if the client closed its end (a read sees EOF or a reset)."""
    conn.settimeout(wait)
    try:
        return conn.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def raw_answer(raw: bytes) -> Script:
    """Send `raw` as it is (status line, headers and body) and close."""

    def answer(conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            conn.sendall(raw)

    return answer


def http_answer(status_line: bytes, body: bytes, *headers: bytes) -> Script:
    """A well-framed answer: `status_line`, `headers`, a Content-Length and `body`."""
    head = b"\r\n".join(
        [status_line, *headers, b"Content-Length: %d" % len(body), b"Connection: close"]
    )
    return raw_answer(head + b"\r\n\r\n" + body)


def silence(seconds: float) -> Script:
    """Read nothing more and answer nothing for `seconds` (or until the client hangs up)."""

    def wait(conn: socket.socket) -> None:
        _peer_closed(conn, seconds)

    return wait


def hang_up(conn: socket.socket) -> None:
    """Close the connection without a byte of answer."""


class WireServer:
    """The server; use as a context manager. `base_url` is `http://127.0.0.1:<port>`."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)  # accept() wakes to see a stop
        self._scripts: deque[Script] = deque()
        self._lock = threading.Lock()
        self.requests: list[bytes] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._stopping = threading.Event()

    @property
    def base_url(self) -> str:
        host, port = self._listener.getsockname()[:2]
        return f"http://{host}:{port}"

    def script(self, *scripts: Script) -> None:
        """Queue `scripts` for the next requests, in order."""
        with self._lock:
            self._scripts.extend(scripts)

    def __enter__(self) -> WireServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        self._listener.close()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            request = _read_request(conn)
            if request is None:
                return
            with self._lock:
                self.requests.append(request)
                script = self._scripts.popleft() if self._scripts else None
            if script is None:
                script = http_answer(b"HTTP/1.1 503 Service Unavailable", b"no script left")
            script(conn)


def _read_request(conn: socket.socket) -> bytes | None:
    """The request's head and body (by Content-Length), or None if the client sent nothing."""
    conn.settimeout(5)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        return head + b"\r\n\r\n" + body
    except OSError:
        return None
