"""An overall deadline on a broker call: connect, send and the whole answer, not each read.

httpx's timeouts bound each socket operation: a broker that trickles its answer a byte at a
time, each byte inside the read timeout, holds the call for as long as it likes (4.3 s with a
0.3 s timeout, measured; unbounded up to the function's kill). So a broker call runs inside
`call_deadline`, which fixes the monotonic instant it must end by, and two things enforce it:

- `DeadlineTransport`, the transport of the clients our adapters build: every connect, TLS
  handshake, write and read gets at most the time left, and none starts once it has passed.
  That is exact, headers included, whatever the broker sends.
- `read_within`, reading the answer as a stream: it stops between chunks once the deadline has
  passed (what an injected client without `DeadlineTransport` still gets) and refuses an answer
  larger than any order or error (`MAX_ANSWER_BYTES`).

Either way the call ends with an exception that the adapter turns into "outcome unknown" (a
retry), and the connection is closed, so the broker sees the call end. (A proxy taken from the
environment, `HTTPS_PROXY`, gets httpx's own transport: there only `read_within` applies.)
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import httpcore
import httpx

MAX_ANSWER_BYTES = 1 << 20
"""The largest answer read (1 MiB): an order or an error is a few hundred bytes."""

_DEADLINE: ContextVar[float | None] = ContextVar("broker_call_deadline", default=None)


class CallDeadlineExceeded(TimeoutError):
    """The broker call's overall deadline passed before its answer was complete."""


class AnswerTooLarge(ValueError):
    """The broker's answer is larger than `MAX_ANSWER_BYTES`."""


@contextmanager
def call_deadline(seconds: float) -> Iterator[float]:
    """The monotonic instant the current broker call must end by; a nested call shares it."""
    current = _DEADLINE.get()
    if current is not None:
        yield current
        return
    deadline = time.monotonic() + seconds
    token = _DEADLINE.set(deadline)
    try:
        yield deadline
    finally:
        _DEADLINE.reset(token)


def time_left(
    timeout: float | None, expired: type[Exception] = CallDeadlineExceeded
) -> float | None:
    """`timeout` shortened to what is left of the current call; raises `expired` once none is."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise expired("the broker call's overall deadline passed")
    return left if timeout is None else min(timeout, left)


def bounded_timeout(timeout: httpx.Timeout) -> httpx.Timeout:
    """`timeout` with no phase longer than what is left of the current call."""
    return httpx.Timeout(
        connect=time_left(timeout.connect),
        read=time_left(timeout.read),
        write=time_left(timeout.write),
        pool=time_left(timeout.pool),
    )


def read_within(response: httpx.Response, deadline: float) -> bytes:
    """The raw body of a streamed `response`, if it is complete by `deadline` and not too large."""
    try:
        whole = response.content  # built in memory (an injected mock transport): already read
    except httpx.ResponseNotRead:
        pass
    else:
        if len(whole) > MAX_ANSWER_BYTES:
            raise AnswerTooLarge(f"the answer exceeds {MAX_ANSWER_BYTES} bytes")
        return whole
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_raw():
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise AnswerTooLarge(f"the answer exceeds {MAX_ANSWER_BYTES} bytes")
        chunks.append(chunk)
        if time.monotonic() >= deadline:
            raise CallDeadlineExceeded("the broker call's overall deadline passed mid-answer")
    return b"".join(chunks)


class DeadlineTransport(httpx.HTTPTransport):
    """httpx's own transport, with every socket operation bounded by the call's deadline."""

    def __init__(self, limits: httpx.Limits | None = None) -> None:
        super().__init__()
        limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)
        # httpx has no public hook for httpcore's network backend; httpcore's pool has one
        # (both pinned in requirements.txt; tests/unit/test_broker_deadline.py checks it holds).
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_DeadlineBackend(httpcore.SyncBackend()),
        )


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(
            host, port, time_left(timeout, httpcore.ConnectTimeout), local_address, socket_options
        )
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_unix_socket(
            path, time_left(timeout, httpcore.ConnectTimeout), socket_options
        )
        return _DeadlineStream(stream)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, time_left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, time_left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.start_tls(
            ssl_context, server_hostname, time_left(timeout, httpcore.ConnectTimeout)
        )
        return _DeadlineStream(stream)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)
