"""Suite-wide pytest set-up: tier markers and the session-wide emulator fixtures.

Under `make test` the emulators already run (`python -m devtools.emulators` exports
`FIRESTORE_EMULATOR_HOST` and `PUBSUB_EMULATOR_HOST`), and the fixtures just hand those over.
Run directly (`.venv/bin/python -m pytest tests/emulator`), each fixture starts its emulator
through `devtools.emulators` on a free port and stops it at the end of the session. An emulator
that cannot start fails the tests that need it with what is missing; nothing is skipped.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from google.cloud import firestore

from devtools import emulators

TESTS_DIR = Path(__file__).resolve().parent
TIER_MARKERS = {
    "emulator": TESTS_DIR / "emulator",
    "e2e": TESTS_DIR / "e2e",
    "chaos": TESTS_DIR / "chaos",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for marker, folder in TIER_MARKERS.items():
            if item.path.is_relative_to(folder):
                item.add_marker(marker)


def emulator_host(kind: emulators.Kind, log_dir: Path) -> Iterator[str]:
    """Yield the emulator's host:port (its variable set meanwhile); fail, not skip, without."""
    try:
        with emulators.running(kind, log_dir=log_dir) as hosts:
            yield hosts[kind.env_var]
    except emulators.EmulatorUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def firestore_emulator_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """host:port of a Firestore emulator; `FIRESTORE_EMULATOR_HOST` is set while it runs."""
    yield from emulator_host(emulators.FIRESTORE, tmp_path_factory.mktemp("firestore-emulator"))


@pytest.fixture(scope="session")
def pubsub_emulator_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """host:port of a Pub/Sub emulator; `PUBSUB_EMULATOR_HOST` is set while it runs."""
    yield from emulator_host(emulators.PUBSUB, tmp_path_factory.mktemp("pubsub-emulator"))


# Firestore projects (docs/EMULATOR-FACTS.md, F3): the emulator keeps data and transaction locks
# per project, so each test module gets its own, and a module's open transaction can never stall
# another module's tests.

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
