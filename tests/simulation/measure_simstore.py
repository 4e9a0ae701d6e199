"""What the simulated store costs: `python -m tests.simulation.measure_simstore [N]`.

Prints the mean wall time of one acquire + release through the real `FirestoreReservationManager`
(with and without an account budget) and of one whole `execute_intent` on the simulated store.
A measurement to read, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import timedelta

from execution.clock import FakeClock
from execution.firestore.reservations import FirestoreReservationManager
from execution.models import Outcome
from execution.reservations import Acquired, ReservationRequest
from tests.simulation.simstore import SimClient
from tests.support.builders import FAST_POLICY, emulator_service, make_intent


def per_call_us(n: int, action: Callable[[int], None]) -> float:
    """Mean microseconds of `action(i)` over `n` calls, after a short warm-up."""
    for i in range(min(50, n)):
        action(-1 - i)
    started = time.process_time()
    for i in range(n):
        action(i)
    return (time.process_time() - started) / n * 1e6


def acquire_release(budget: bool) -> Callable[[int], None]:
    clock = FakeClock()
    db = SimClient(clock=clock)
    if budget:
        db.collection("tenants", "t", "accounts").document("a").set({"max_inflight_usd": 1e12})
    manager = FirestoreReservationManager(
        db, clock=clock, ttl=timedelta(seconds=600), policy=FAST_POLICY
    )

    def run(i: int) -> None:
        result = manager.acquire(
            ReservationRequest(
                tenant_id="t",
                broker_account_id="a",
                client_intent_id=f"i{i}",
                symbol="AAPL",
                amount_usd=10.0,
                payload_hash="h",
            )
        )
        assert isinstance(result, Acquired)
        result.handle.release(Outcome.PLACED, broker_order_id="o")

    return run


def engine_invocation() -> Callable[[int], None]:
    clock = FakeClock()
    service = emulator_service(SimClient(clock=clock), clock)

    def run(i: int) -> None:
        intent = make_intent(tenant_id="t", broker_account_id="a", client_intent_id=f"i{i}")
        assert service.engine.execute_intent(intent).outcome is Outcome.PLACED

    return run


def main(n: int) -> None:
    print(f"acquire + release, no budget:  {per_call_us(n, acquire_release(False)):7.1f} us")
    print(f"acquire + release, budgeted:   {per_call_us(n, acquire_release(True)):7.1f} us")
    print(f"execute_intent (placed):       {per_call_us(n, engine_invocation()):7.1f} us")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
