"""`make dev` stopped the way a process manager or a closed terminal stops it leaves nothing behind.

Each test starts the real local stack (`python -m devtools.stack`, or `make dev`'s whole command
line) on emulators it starts itself, waits for its "ready" banner, notes every process under it,
sends one signal to the top process only (as `kill PID` does), and then waits on each of those
processes: a pidfd becomes readable when its process has exited. The only timeout is a bound on
failure, never a measure of success.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
READY = "Local stack ready"
FAILURE_BOUND_S = 30.0
"""How long a process may take to go once signalled before the test calls it a survivor: a bound
on failure (a process that was stopped properly is gone before the stack exits)."""
SLOW_START = pytest.mark.timeout(300)
"""Each test starts two emulators of its own: on a loaded machine that alone may take a minute."""

STACK = [sys.executable, "-m", "devtools.stack"]
MAKE_DEV = [
    sys.executable,
    "-m",
    "devtools.emulators",
    "--",
    f"exec {sys.executable} -m devtools.stack",
]
"""What `make dev` runs: the stack inside the emulator launcher (the Makefile's `dev` line)."""


def descendants(pid: int) -> list[int]:
    """Every process under `pid` (children, their children, ...), from /proc."""
    found: list[int] = []
    stack = [pid]
    while stack:
        parent = stack.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            with contextlib.suppress(OSError):
                children = [int(child) for child in (task / "children").read_text().split()]
                found.extend(children)
                stack.extend(children)
    return found


def command_line(pid: int) -> str:
    """The process's command line, for a failure message."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return "(gone)"


@contextlib.contextmanager
def started(command: list[str], cwd: Path) -> Iterator[subprocess.Popen[str]]:
    """`command` running with no emulator variables (it starts its own), up to its banner."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in {"FIRESTORE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST"}
    }
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        seen = []
        for line in process.stdout:  # ends when it exits: it never waits here forever
            seen.append(line)
            if READY in line:
                break
        else:
            raise AssertionError(f"the stack never got ready; it printed:\n{''.join(seen)}")
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


def survivors(pidfds: dict[int, int]) -> list[int]:
    """The processes that have not exited within `FAILURE_BOUND_S` of this call."""
    poller = select.poll()
    for fd in pidfds.values():
        poller.register(fd, select.POLLIN)
    waiting = dict(pidfds)
    deadline_ms = int(FAILURE_BOUND_S * 1000)
    while waiting:
        ready = poller.poll(deadline_ms)
        if not ready:
            break
        for fd, _event in ready:
            poller.unregister(fd)
            waiting = {pid: pidfd for pid, pidfd in waiting.items() if pidfd != fd}
    return sorted(waiting)


def stop_and_find_survivors(command: list[str], signum: int, cwd: Path) -> dict[int, str]:
    """Start `command`, send `signum` to its top process, return what outlived it (pid: cmdline)."""
    pidfds: dict[int, int] = {}
    try:
        with started(command, cwd) as top:
            # pidfds, opened before the signal, name these very processes even if their ids
            # are reused afterwards.
            for pid in descendants(top.pid):
                with contextlib.suppress(ProcessLookupError):
                    pidfds[pid] = os.pidfd_open(pid)
            assert len(pidfds) >= 3, "expected the emulators and the function server under it"
            names = {pid: command_line(pid) for pid in pidfds}
            top.send_signal(signum)
            top.wait(timeout=FAILURE_BOUND_S)
            left = survivors(pidfds)
        return {pid: names[pid] for pid in left}
    finally:
        for fd in pidfds.values():
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            os.close(fd)


@SLOW_START
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_the_stack_stopped_by_a_signal_stops_its_function_server_and_emulators(
    signum: int, tmp_path: Path
) -> None:
    left = stop_and_find_survivors(STACK, signum, tmp_path)

    assert left == {}


@SLOW_START
def test_make_dev_stopped_by_sigterm_to_the_emulator_launcher_leaves_nothing_running(
    tmp_path: Path,
) -> None:
    left = stop_and_find_survivors(MAKE_DEV, signal.SIGTERM, tmp_path)

    assert left == {}


def test_make_dev_runs_the_stack_in_place_of_the_launchers_shell() -> None:
    # Without `exec` the shell between them takes the SIGTERM and dies, and the stack stays.
    assert '"exec $(PY) -m devtools.stack"' in (ROOT / "Makefile").read_text()
