"""What every measurement shares: the emulator, progress lines, threaded runs, statistics."""

from __future__ import annotations

import io
import logging
import os
import statistics
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.cloud import firestore

from execution.telemetry import JsonFormatter

_STARTED = time.monotonic()


def progress(message: str) -> None:
    """One line on stdout, stamped with the seconds since the bench started."""
    print(f"[bench {time.monotonic() - _STARTED:6.1f}s] {message}", flush=True)


def emulator_host() -> str:
    """The Firestore emulator's address; the bench never runs against a real project."""
    host = os.environ.get("FIRESTORE_EMULATOR_HOST")
    if not host:
        raise SystemExit(
            "FIRESTORE_EMULATOR_HOST is not set: run `make bench`, which starts the emulators"
        )
    return host


def reset(project: str) -> None:
    """Delete every document of `project` in the emulator (no transaction may be open)."""
    url = f"http://{emulator_host()}/emulator/v1/projects/{project}/databases/(default)/documents"
    request = urllib.request.Request(url, method="DELETE")
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


def client(project: str) -> firestore.Client:
    """A Firestore client on the emulator for `project` (one per measurement)."""
    emulator_host()
    return firestore.Client(project=project)


def production_logging() -> None:
    """Format our JSON log lines as production does (INFO), but write them nowhere.

    The engine's cost includes building and formatting its structured records; printing 100,000
    of them to the terminal would measure the terminal instead.
    """
    root = logging.getLogger("execution")
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(_Discard())
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False


class _Discard(io.TextIOBase):
    def write(self, text: str) -> int:
        return len(text)


def percentile(values: list[float], q: float) -> float:
    """The `q`-th percentile (0-100) by linear interpolation between closest ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: list[float]) -> float:
    """The median, NaN for no values."""
    return statistics.median(values) if values else float("nan")


def emulator_pids() -> list[int]:
    """The Firestore emulator's Java process(es), found by command line, to read their CPU time."""
    port = emulator_host().rsplit(":", 1)[1].encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as file:
                argv = file.read().split(b"\0")
        except OSError:
            continue
        if not (argv and argv[0].endswith(b"java") and any(b"firestore" in a for a in argv)):
            continue
        # Another emulator may be running on this machine (someone's `make test`): ours is the
        # one listening on the port we use.
        if port in argv or b"--port=" + port in argv:
            pids.append(int(entry))
    return pids


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by `pids` (0 for any that vanished)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as file:
                fields = file.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


@dataclass
class RunResult:
    """What one timed, threaded run did."""

    threads: int
    ok: int
    elapsed: float
    failures: Counter[str] = field(default_factory=Counter)
    client_cpu: float = 0.0
    """CPU seconds this (client) process used during the run, all threads."""
    emulator_cpu: float = 0.0
    """CPU seconds the Firestore emulator used during the run."""

    def cpu_ms_per_op(self) -> tuple[float, float]:
        """(client, emulator) CPU milliseconds per successful operation."""
        if not self.ok:
            return (float("nan"), float("nan"))
        return (self.client_cpu / self.ok * 1000, self.emulator_cpu / self.ok * 1000)

    @property
    def rate(self) -> float:
        """Successful operations per second."""
        return self.ok / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def failed(self) -> int:
        """Operations that raised or ended otherwise than wanted."""
        return sum(self.failures.values())


Operation = Callable[[int, int], Any]
"""`op(thread_index, sequence)`: one unit of work; returns normally on success or raises."""


def run_threads(
    op: Operation, *, threads: int, duration: float, check: Callable[[Any], str | None]
) -> RunResult:
    """Run `op` on `threads` threads for `duration` seconds; count successes and failures.

    Every thread starts at one barrier and stops starting new operations at the deadline; the
    elapsed time runs until the last operation in flight has finished, so no work is free.
    `check(result)` names a failure (or returns None for success).
    """
    barrier = threading.Barrier(threads + 1)
    lock = threading.Lock()
    ok = 0
    failures: Counter[str] = Counter()
    deadline = 0.0

    def worker(index: int) -> None:
        nonlocal ok
        done = 0
        bad: Counter[str] = Counter()
        barrier.wait()
        sequence = 0
        while time.perf_counter() < deadline:
            try:
                reason = check(op(index, sequence))
            except Exception as exc:
                reason = type(exc).__name__
            if reason is None:
                done += 1
            else:
                bad[reason] += 1
            sequence += 1
        with lock:
            ok += done
            failures.update(bad)

    workers = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for thread in workers:
        thread.start()
    emulator = emulator_pids()
    client_cpu, emulator_cpu = time.process_time(), cpu_seconds(emulator)
    start = time.perf_counter()
    deadline = start + duration
    barrier.wait()
    for thread in workers:
        thread.join()
    return RunResult(
        threads=threads,
        ok=ok,
        elapsed=time.perf_counter() - start,
        failures=failures,
        client_cpu=time.process_time() - client_cpu,
        emulator_cpu=cpu_seconds(emulator) - emulator_cpu,
    )
