"""Firestore fixtures for the emulator tier: one emulator project per test module.

The emulator keeps data and transaction locks per project, so a module's open transaction
can never stall another module's tests, and a reset only wipes the module's own project.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from google.cloud import firestore

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
