"""End-to-end fixtures: a push channel from a fresh topic to the module's `server` fixture."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from devtools.functions_server import FunctionsServer
from devtools.pubsub import PushChannel
from tests.support.builders import unique


@pytest.fixture
def channel(
    server: FunctionsServer, firestore_project: str, pubsub_emulator_host: str
) -> Iterator[PushChannel]:
    """A topic of this test's own, pushing to the function server the module defines."""
    assert os.environ["PUBSUB_EMULATOR_HOST"] == pubsub_emulator_host
    push = PushChannel(firestore_project, unique("intents"), server.url)
    yield push
    push.close()
