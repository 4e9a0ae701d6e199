"""What the figures were measured on: hardware, load, software versions, the commit."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from devtools.emulators import sdk_root

ROOT = Path(__file__).resolve().parents[1]
LIBRARIES = (
    "google-cloud-firestore",
    "grpcio",
    "protobuf",
    "proto-plus",
    "functions-framework",
    "pydantic",
    "matplotlib",
)


def describe() -> dict[str, Any]:
    """The machine and software, as far as this process can see them."""
    return {
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gb": round(_mem_total_kb() / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "libraries": {name: _version(name) for name in LIBRARIES},
        "emulators": _emulator_versions(),
        "java": _java(),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--", "execution", "main.py")),
    }


def load_average() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages (other work on the machine skews every figure)."""
    return os.getloadavg()


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _mem_total_kb() -> float:
    with contextlib.suppress(OSError, IndexError, ValueError):
        return float(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
    return 0.0


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _emulator_versions() -> dict[str, str]:
    """Versions from the Cloud SDK's component snapshots (where `make` takes the emulators)."""
    root = sdk_root()
    versions: dict[str, str] = {}
    if root is None:
        return versions
    for component in ("cloud-firestore-emulator", "pubsub-emulator"):
        snapshot = root / ".install" / f"{component}.snapshot.json"
        with contextlib.suppress(OSError, ValueError, KeyError):
            for entry in json.loads(snapshot.read_text())["components"]:
                if entry["id"] == component:
                    versions[component] = entry["version"]["version_string"]
    return versions


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        return "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
        first = (out.stderr or out.stdout).splitlines()
        return first[0] if first else "unknown"
    return "unknown"


def _git(*args: str) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
        return out.stdout.strip()
    return ""
