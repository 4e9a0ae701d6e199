"""Fixtures of the simulation tier: the simulated store, and both stores for the contract suite."""

from __future__ import annotations

from typing import Any

import pytest

from execution.clock import FakeClock
from tests.simulation.simstore import SimClient

STORES = [pytest.param("emulator", marks=pytest.mark.emulator), "simulated"]
"""The two stores every contract test runs against; a difference is a bug of the simulation."""


@pytest.fixture
def sim_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim_db(sim_clock: FakeClock) -> SimClient:
    """A fresh simulated store on `sim_clock`."""
    return SimClient(clock=sim_clock)


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest) -> Any:
    """The Firestore emulator's client, or the simulated one (the test cannot tell)."""
    if request.param == "emulator":
        return request.getfixturevalue("db")
    return request.getfixturevalue("sim_db")
