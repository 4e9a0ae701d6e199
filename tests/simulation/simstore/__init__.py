"""A simulated Firestore for the deterministic-simulation tier (see `client`).

Its semantics are pinned by `tests/simulation/contract`, which runs the same tests against it
and against the Firestore emulator.
"""

from tests.simulation.simstore.client import SimClient
from tests.simulation.simstore.faults import Fault, FaultHook, StoreCall

__all__ = ["Fault", "FaultHook", "SimClient", "StoreCall"]
