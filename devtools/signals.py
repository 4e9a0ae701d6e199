"""How the dev tools stop: on SIGTERM and SIGHUP as on Ctrl-C, so every `finally` runs.

Python's default for SIGTERM (`kill PID`, a process manager) and SIGHUP (a closed terminal) ends
the process at once, running no `finally`. The function servers and emulators a dev tool starts
live in sessions of their own (so they can be killed whole, and no terminal signal reaches them),
so they would outlive it. Inside `stopped_by_signals` those signals raise `Stopped`, a
`KeyboardInterrupt`, and unwind the tool as Ctrl-C does. A tool that runs another command
(`devtools.emulators`) uses `wait_passing_stops` instead: the command stops what it started
before the tool stops the emulators under it.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived; handled wherever Ctrl-C is."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def stopped_by_signals() -> Iterator[None]:
    """Inside, SIGTERM or SIGHUP raises `Stopped` once; a repeat while unwinding is ignored,
    so it cannot cut the clean-up short."""

    def stop(signum: int, _frame: FrameType | None) -> None:
        for each in STOP_SIGNALS:
            signal.signal(each, signal.SIG_IGN)
        raise Stopped(signum)

    with _handlers(dict.fromkeys(STOP_SIGNALS, stop)):
        yield


def wait_passing_stops(process: subprocess.Popen[bytes]) -> int:
    """Wait for `process` to end and return its exit status (128 + N where signal N ended it),
    passing SIGTERM and SIGHUP on to it.

    SIGINT is ignored meanwhile, as `system()` does: Ctrl-C reaches the command from the
    terminal itself, and whatever the command started must be stopped (by it) before anything
    this process started (the emulators) is.
    """

    def pass_on(signum: int, _frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signum)

    with _handlers({**dict.fromkeys(STOP_SIGNALS, pass_on), signal.SIGINT: signal.SIG_IGN}):
        status = process.wait()
    return 128 - status if status < 0 else status


Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None
"""What `signal.signal` takes and returns (None: a handler not installed from Python)."""


@contextlib.contextmanager
def _handlers(handlers: dict[signal.Signals, Handler]) -> Iterator[None]:
    """`handlers` installed while inside; the previous ones back afterwards."""
    previous = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
