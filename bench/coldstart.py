"""Cold start: `import main`, and a functions-framework server on it, against a bare function.

The bare function (`bench/bare/main.py`) imports functions_framework and google.cloud.firestore
at module level — the client library `main.py` uses — and does one Firestore `get` per request.
Every figure is the median of fresh processes, the two sides alternating:

- import: seconds to import the module in a fresh interpreter (and its resident memory after);
- server: `functions-framework` started on each source as Cloud Functions starts it; seconds until
  it accepts connections, seconds for the first request (for `main.py` one valid intent, placed
  on the emulator; it builds the service then), and the resident memory of the server's processes
  (gunicorn's master and its worker) after that first answer: the worker's RSS, and the PSS of
  master + worker (shared pages counted once).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import median, progress, reset
from devtools.emulators import free_loopback_port

ROOT = Path(__file__).resolve().parents[1]
BARE = ROOT / "bench" / "bare" / "main.py"

_IMPORT_PROBE = """
import resource, sys, time
sys.path.insert(0, {folder!r})
start = time.perf_counter()
import {module}
elapsed = time.perf_counter() - start
rss_kb = int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0])
print(elapsed, rss_kb)
"""


@dataclass
class Side:
    """One side's samples (seconds, and kB of resident memory)."""

    import_s: list[float] = field(default_factory=list)
    import_rss_kb: list[float] = field(default_factory=list)
    ready_s: list[float] = field(default_factory=list)
    first_request_s: list[float] = field(default_factory=list)
    worker_rss_kb: list[float] = field(default_factory=list)
    total_rss_kb: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        """Medians, in ms and MB."""
        return {
            "import_ms": round(median(self.import_s) * 1000, 1),
            "import_rss_mb": round(median(self.import_rss_kb) / 1024, 1),
            "ready_ms": round(median(self.ready_s) * 1000, 1),
            "first_request_ms": round(median(self.first_request_s) * 1000, 1),
            "to_first_answer_ms": round(
                median([r + f for r, f in zip(self.ready_s, self.first_request_s, strict=True)])
                * 1000,
                1,
            ),
            "worker_rss_mb": round(median(self.worker_rss_kb) / 1024, 1),
            "server_pss_mb": round(median(self.total_rss_kb) / 1024, 1),
        }


@dataclass
class ColdStart:
    """Both sides, plus the bare interpreter and functions_framework alone, for reference."""

    main: Side
    bare: Side
    python_import_s: list[float]
    framework_import_s: list[float]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready medians and the ratios main/bare."""
        main, bare = self.main.summary(), self.bare.summary()
        return {
            "main": main,
            "bare": bare,
            "functions_framework_import_ms": round(median(self.framework_import_s) * 1000, 1),
            "interpreter_start_ms": round(median(self.python_import_s) * 1000, 1),
            "import_ratio": round(main["import_ms"] / bare["import_ms"], 3),
            "first_answer_ratio": round(main["to_first_answer_ms"] / bare["to_first_answer_ms"], 3),
            "worker_rss_ratio": round(main["worker_rss_mb"] / bare["worker_rss_mb"], 3),
            "server_pss_ratio": round(main["server_pss_mb"] / bare["server_pss_mb"], 3),
            "runs": len(self.main.import_s),
        }


def measure(project: str, *, runs: int) -> ColdStart:
    """`runs` fresh imports and `runs` fresh servers per side, alternating."""
    reset(project)
    main, bare = Side(), Side()
    python_s: list[float] = []
    framework_s: list[float] = []
    for run in range(runs):
        sides = [("main", main), ("bare", bare)]
        if run % 2:
            sides.reverse()
        for name, side in sides:
            folder = ROOT if name == "main" else BARE.parent
            seconds, rss = _import(str(folder), "main")
            side.import_s.append(seconds)
            side.import_rss_kb.append(rss)
        python_s.append(_interpreter_start())
        framework_s.append(_import(str(ROOT), "functions_framework")[0])
        progress(
            f"cold start: import {run + 1}/{runs}: main {main.import_s[-1] * 1000:.0f} ms, "
            f"bare {bare.import_s[-1] * 1000:.0f} ms"
        )
    for run in range(runs):
        sides = [("main", main), ("bare", bare)]
        if run % 2:
            sides.reverse()
        for name, side in sides:
            _serve_once(name, side, project)
        progress(
            f"cold start: server {run + 1}/{runs}: main ready+first "
            f"{(main.ready_s[-1] + main.first_request_s[-1]) * 1000:.0f} ms "
            f"{main.total_rss_kb[-1] / 1024:.0f} MB, bare "
            f"{(bare.ready_s[-1] + bare.first_request_s[-1]) * 1000:.0f} ms "
            f"{bare.total_rss_kb[-1] / 1024:.0f} MB"
        )
    return ColdStart(main, bare, python_s, framework_s)


def _import(folder: str, module: str) -> tuple[float, float]:
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE.format(folder=folder, module=module)],
        cwd=folder,
        capture_output=True,
        text=True,
        check=True,
        env=_clean_env(),
    ).stdout.split()
    return float(out[0]), float(out[1])


def _interpreter_start() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True, env=_clean_env())
    return time.perf_counter() - start


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHONPATH")}
    env.update(extra)
    return env


def _serve_once(name: str, side: Side, project: str) -> None:
    port = free_loopback_port()
    if name == "main":
        source, target, signature = ROOT / "main.py", "execute_intent", "cloudevent"
    else:
        source, target, signature = BARE, "probe", "http"
    command = [
        str(Path(sys.executable).with_name("functions-framework")),
        "--target", target,
        "--signature-type", signature,
        "--source", str(source),
        "--host", "127.0.0.1",
        "--port", str(port),
    ]  # fmt: skip
    env = _clean_env(GOOGLE_CLOUD_PROJECT=project, PYTHONUNBUFFERED="1")
    start = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=source.parent,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        while not _accepting(port):
            if process.poll() is not None or time.perf_counter() - start > 60:
                error = process.stderr.read().decode(errors="replace") if process.stderr else ""
                raise RuntimeError(f"functions-framework on {source.name} did not start:\n{error}")
            time.sleep(0.005)
        side.ready_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        status = _first_request(name, port, project)
        side.first_request_s.append(time.perf_counter() - start)
        if status != 200:
            raise RuntimeError(f"{source.name} answered {status} to its first request")
        worker, total = _rss_kb(process.pid)
        side.worker_rss_kb.append(worker)
        side.total_rss_kb.append(total)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if process.stderr:
            process.stderr.close()


def _first_request(name: str, port: int, project: str) -> int:
    url = f"http://127.0.0.1:{port}/"
    if name == "main":
        intent = {
            "tenant_id": "bench-cold",
            "broker_account_id": "acct-000",
            "client_intent_id": f"cold-{uuid.uuid4().hex[:12]}",
            "symbol": "AAPL",
            "side": "buy",
            "qty": 1,
            "order_type": "limit",
            "limit_price": 100.0,
        }
        body = json.dumps(
            {
                "message": {
                    "data": base64.b64encode(json.dumps(intent).encode()).decode(),
                    "messageId": str(uuid.uuid4().int % 10**12),
                    "publishTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                },
                "subscription": f"projects/{project}/subscriptions/bench",
            }
        ).encode()
        headers = {
            "Content-Type": "application/json",
            "ce-id": uuid.uuid4().hex,
            "ce-specversion": "1.0",
            "ce-source": f"//pubsub.googleapis.com/projects/{project}/topics/trade-intents",
            "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        }
    else:
        body, headers = b"{}", {"Content-Type": "application/json"}
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    with urllib.request.urlopen(request, timeout=60) as response:
        response.read()
        return int(response.status)


def _rss_kb(pid: int) -> tuple[float, float]:
    """(worker RSS, whole server's PSS) in kB.

    The worker is gunicorn's child (the largest, should there be more). The server total is the
    proportional set size summed over master and worker: pages the fork shares count once, where
    summing RSS would count them twice.
    """
    tree = [pid, *_descendants(pid)]
    children = [_memory_kb(p, "VmRSS:", "status") for p in tree if p != pid]
    worker = max(children) if children else _memory_kb(pid, "VmRSS:", "status")
    return worker, sum(_memory_kb(p, "Pss:", "smaps_rollup") for p in tree)


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                found.append(int(child))
                found.extend(_descendants(int(child)))
    return found


def _memory_kb(pid: int, key: str, file: str) -> float:
    with contextlib.suppress(OSError, IndexError, ValueError):
        text = Path(f"/proc/{pid}/{file}").read_text()
        return float(text.split("\n" + key)[1].split()[0])
    return 0.0


def _accepting(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0
