"""Suite-wide pytest set-up: tier markers and the session-wide emulator fixtures.

Under `make test` the emulators already run (`firebase emulators:exec` exports
`FIRESTORE_EMULATOR_HOST` and `PUBSUB_EMULATOR_HOST`), and the fixtures just hand those over.
Run directly (`.venv/bin/python -m pytest tests/emulator`), each fixture starts its emulator
with the Google Cloud CLI on a free port, in its own process group, and stops it at the end of
the session. An emulator that cannot start fails the tests that need it; nothing is skipped.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from google.cloud import firestore

TESTS_DIR = Path(__file__).resolve().parent
TIER_MARKERS = {
    "emulator": TESTS_DIR / "emulator",
    "e2e": TESTS_DIR / "e2e",
    "chaos": TESTS_DIR / "chaos",
}

EMULATOR_PROJECT = "demo-execution"
STARTUP_TIMEOUT_S = 30.0
HOW_TO_GET_EMULATORS = (
    "Run `make test`, which starts the emulators with firebase-tools; or install the Google "
    "Cloud CLI emulator components (Debian: `apt-get install google-cloud-cli-firestore-emulator "
    "google-cloud-cli-pubsub-emulator`; elsewhere: `gcloud components install "
    "cloud-firestore-emulator pubsub-emulator beta`) and a Java runtime, or set {env_var} to the "
    "host:port of an emulator that is already running."
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for marker, folder in TIER_MARKERS.items():
            if item.path.is_relative_to(folder):
                item.add_marker(marker)


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def answers_http(host: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}/", timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def log_tail(path: Path, lines: int = 20) -> str:
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


def run_emulator(name: str, env_var: str, gcloud_args: list[str], log_dir: Path) -> Iterator[str]:
    """Yield the emulator's host:port: the one in `env_var`, else one started with gcloud."""
    how_to = HOW_TO_GET_EMULATORS.format(env_var=env_var)
    existing = os.environ.get(env_var)
    if existing:
        if not answers_http(existing):
            pytest.fail(f"{env_var}={existing}, but nothing answers there. {how_to}", pytrace=False)
        yield existing
        return

    gcloud = shutil.which("gcloud")
    if gcloud is None:
        pytest.fail(f"{env_var} is not set and `gcloud` is not on PATH. {how_to}", pytrace=False)

    host = f"127.0.0.1:{free_loopback_port()}"
    log_path = log_dir / f"{name.lower().replace('/', '')}-emulator.log"
    command = [gcloud, *gcloud_args, f"--host-port={host}"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"},
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not answers_http(host):
            if process.poll() is not None or time.monotonic() > deadline:
                problem = (
                    f"exited with code {process.returncode}"
                    if process.poll() is not None
                    else f"did not answer within {STARTUP_TIMEOUT_S:.0f} s"
                )
                pytest.fail(
                    f"The {name} emulator ({' '.join(command)}) {problem}. {how_to}\n"
                    f"Last lines of {log_path}:\n{log_tail(log_path)}",
                    pytrace=False,
                )
            time.sleep(0.2)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(env_var, host)
            yield host
    finally:
        stop_process_group(process)


@pytest.fixture(scope="session")
def firestore_emulator_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """host:port of a Firestore emulator; `FIRESTORE_EMULATOR_HOST` is set while it runs."""
    yield from run_emulator(
        "Firestore",
        "FIRESTORE_EMULATOR_HOST",
        ["emulators", "firestore", "start"],
        tmp_path_factory.mktemp("firestore-emulator"),
    )


@pytest.fixture(scope="session")
def pubsub_emulator_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """host:port of a Pub/Sub emulator; `PUBSUB_EMULATOR_HOST` is set while it runs."""
    yield from run_emulator(
        "Pub/Sub",
        "PUBSUB_EMULATOR_HOST",
        ["beta", "emulators", "pubsub", "start", f"--project={EMULATOR_PROJECT}"],
        tmp_path_factory.mktemp("pubsub-emulator"),
    )


# Firestore projects: the emulator keeps data and transaction locks per project, so each test
# module gets its own, and a module's open transaction can never stall another module's tests.

PROJECT_ID_MAX_LEN = 30


def project_id_for(module_name: str, worker: str = "") -> str:
    """`demo-<module slug>-<hash>`: a valid project id, unique per module (and xdist worker)."""
    base = module_name.rsplit(".", 1)[-1].removeprefix("test_")
    slug = re.sub(r"[^a-z0-9]+", "-", base.lower()).strip("-") or "tests"
    digest = hashlib.sha256(f"{module_name}:{worker}".encode()).hexdigest()[:6]
    room = PROJECT_ID_MAX_LEN - len("demo--") - len(digest)
    return f"demo-{slug[:room].rstrip('-')}-{digest}"


@pytest.fixture(scope="module")
def firestore_project(request: pytest.FixtureRequest) -> str:
    """An emulator project id of this test module's own."""
    return project_id_for(request.module.__name__, os.environ.get("PYTEST_XDIST_WORKER", ""))


@pytest.fixture(scope="module")
def db(firestore_emulator_host: str, firestore_project: str) -> Iterator[firestore.Client]:
    """A Firestore client on this module's emulator project."""
    # The client reads FIRESTORE_EMULATOR_HOST when it is built; the host fixture has set it.
    assert os.environ.get("FIRESTORE_EMULATOR_HOST") == firestore_emulator_host
    client = firestore.Client(project=firestore_project)
    # The code under test uses 2 s store deadlines; a cold emulator (its JIT not yet warm, the
    # machine busy) can take longer on its first requests: answer one with room first.
    client.collection("warm-up").document("warm-up").get(timeout=60)
    yield client
    client.close()


@pytest.fixture
def reset_firestore(firestore_emulator_host: str, firestore_project: str) -> Callable[[], None]:
    """Delete every document of this module's project now; call the result to do it again."""
    url = (
        f"http://{firestore_emulator_host}/emulator/v1/projects/{firestore_project}"
        "/databases/(default)/documents"
    )

    def reset() -> None:
        with urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=10):
            pass

    reset()
    return reset
