"""A real functions-framework server process serving one of `main.py`'s entry points.

Started as Cloud Functions starts it (the `functions-framework` command on `main.py`), in its own
process group so a test can SIGKILL it mid-call, as a killed instance dies. Its stdout holds our
structured JSON log lines, which tests read as the record of what each delivery did.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from devtools.emulators import free_loopback_port

ROOT = Path(__file__).resolve().parents[1]


class FunctionsServer:
    """`functions-framework --target TARGET` on a fixed loopback port, restartable."""

    def __init__(
        self, target: str, signature_type: str, env: dict[str, str], log_path: Path
    ) -> None:
        self.target = target
        self.signature_type = signature_type
        self.env = env
        self.log_path = log_path
        self.port = free_loopback_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's base URL (the push endpoint)."""
        return f"http://127.0.0.1:{self.port}/"

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait until it accepts connections."""
        command = [
            str(Path(sys.executable).with_name("functions-framework")),
            "--target",
            self.target,
            "--signature-type",
            self.signature_type,
            "--source",
            str(ROOT / "main.py"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not self._accepting():
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"functions-framework ({self.target}) did not start; its output:\n"
                    + self.log_path.read_text(errors="replace")[-3000:]
                )
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL the whole server (master and workers), as a killed instance dies."""
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait()
        self._process = None

    def signal(self, signum: int) -> None:
        """Send `signum` to the whole server (SIGSTOP pauses it as a frozen instance; SIGCONT)."""
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signum)

    def stopped(self) -> bool:
        """Whether every process of the server is stopped (state `T` in /proc)."""
        if self._process is None:
            return False
        pids = [self._process.pid, *_children(self._process.pid)]
        return all(_state(pid) in {"T", "t"} for pid in pids)

    def restart(self) -> None:
        """A new instance on the same port: cold start, no state but the store's."""
        self.kill()
        self.start()

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The structured log records the server wrote, optionally only event `name`."""
        records = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            with contextlib.suppress(json.JSONDecodeError):
                record = json.loads(line)
                if name is None or record.get("event") == name:
                    records.append(record)
        return records

    def post(
        self,
        path: str = "/",
        body: bytes = b"{}",
        method: str = "POST",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """Send one HTTP request; the status and the decoded JSON answer."""
        request = urllib.request.Request(
            self.url.rstrip("/") + path,
            data=body,
            method=method,
            headers=headers or {"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                answer = response.read()
                # A CloudEvent function answers the text "OK"; an HTTP one answers JSON.
                with contextlib.suppress(json.JSONDecodeError):
                    return response.status, json.loads(answer or b"null")
                return response.status, answer.decode(errors="replace")
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")

    def _accepting(self) -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", self.port)) == 0


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def _state(pid: int) -> str:
    """The process's state letter from /proc (`?` once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "?"
    return stat.rsplit(")", 1)[1].split()[0]
