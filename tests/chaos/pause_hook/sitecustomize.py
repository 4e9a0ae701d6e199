"""Planned pause points inside a chaos function server (loaded by Python as `sitecustomize`).

The chaos rig starts its `execute_intent` servers with this folder on `PYTHONPATH` and
`CHAOS_PAUSE_DIR` set. A file `{client_order_id}.before` or `{client_order_id}.after` there plans a
pause of the process that places that order: right before its broker call (past every check the
engine makes, the lease-room check included) or right after the broker answered (before the
release). The process claims the plan (an atomic rename: one process, once), writes
`{client_order_id}.paused`, and stops its whole process group with SIGSTOP, as a GC pause, a
throttled CPU or a VM pause stops an instance; when its take-over is done the rig writes
`{client_order_id}.resume` and sends SIGCONT.

Nothing else changes: the broker call itself, and everything the engine does around it, is the
product's own. Without `CHAOS_PAUSE_DIR` this module does nothing.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

PAUSE_DIR = os.environ.get("CHAOS_PAUSE_DIR")


def _claim(directory: Path, client_order_id: str, point: str) -> bool:
    """Take the plan to pause this order at `point`, if there is one and nobody took it."""
    try:
        (directory / f"{client_order_id}.{point}").rename(directory / f"{client_order_id}.claimed")
    except OSError:
        return False
    return True


def _pause(directory: Path, client_order_id: str) -> None:
    (directory / f"{client_order_id}.paused").write_text(str(os.getpgid(0)))
    os.killpg(os.getpgid(0), signal.SIGSTOP)
    # A stop can take effect a little after the signal is sent (seen: a release committed in
    # between): this thread also waits for the rig's word, so it never moves on early.
    while not (directory / f"{client_order_id}.resume").exists():
        time.sleep(0.05)


def _install(directory: Path) -> None:
    sys.path.append(str(Path(__file__).resolve().parents[3]))
    from execution.brokers.alpaca import AlpacaBroker

    place_order = AlpacaBroker.place_order

    def paused_place_order(self: AlpacaBroker, order: Any) -> Any:
        coid = order.client_order_id
        if _claim(directory, coid, "before"):
            _pause(directory, coid)
        placed = place_order(self, order)
        if _claim(directory, coid, "after"):
            _pause(directory, coid)
        return placed

    AlpacaBroker.place_order = paused_place_order  # type: ignore[method-assign]


if PAUSE_DIR:
    _install(Path(PAUSE_DIR))
