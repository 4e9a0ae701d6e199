"""An outlived attempt whose broker answer is lost, on the Firestore emulator (found by the chaos
suite's zombie storms: `CHAOS_SEED=4242`, storm `before/halt_global`).

The attempt is paused right before its broker call; meanwhile its lease lapses, a kill switch
turns on and a redelivery on another instance takes the intent over and records `halted`. The
attempt resumes and its order reaches the broker, but the answer is lost (malformed after
accept: outcome unknown). Its release of `exception` is fenced; the engine then looks the order up
and settles the record to it (cancelled, since the record said `halted`), so the next delivery is
a `duplicate` of `placed` and no open order stays under a record that says `halted` until the
reconciler runs (it did before the fix).
"""

from __future__ import annotations

import pytest
from google.cloud import firestore

from devtools.alpaca_sandbox import (
    AlpacaSandbox,
    malformed_json_after_accept,
)
from execution.brokers.alpaca import AlpacaBroker
from execution.clock import FakeClock
from execution.errors import RetryableError
from execution.models import Outcome
from tests.support.builders import (
    PausedInsideTheCall,
    client_order_id_of,
    emulator_service,
    fast_settings,
    live,
    make_intent,
    reservation,
    unique,
)


def test_an_outlived_attempt_that_lost_its_answer_leaves_no_open_order_under_halted(
    db: firestore.Client,
    alpaca: AlpacaSandbox,
    alpaca_broker: AlpacaBroker,
) -> None:
    clock = FakeClock()
    intent = make_intent(tenant_id=unique("tenant"))

    def meanwhile() -> None:
        clock.advance(fast_settings().reservation_ttl_seconds + 1)
        db.collection("tenants", intent.tenant_id, "ops").document("execution_kill_switch").set(
            {"enabled": True}
        )
        take_over = emulator_service(db, clock, settings=live(), broker=alpaca_broker)
        take_over.engine.execute_intent(intent)
        alpaca.inject("POST", malformed_json_after_accept())  # the zombie's answer is lost

    zombie = PausedInsideTheCall(alpaca_broker, meanwhile)
    service = emulator_service(
        db, clock, settings=live(shared_read_max_age_seconds=0.0), broker=zombie
    )
    with pytest.raises(RetryableError):
        service.engine.execute_intent(intent)
    redelivered = service.engine.execute_intent(intent)  # Pub/Sub delivers the message again

    doc = reservation(db, intent.tenant_id, intent.client_intent_id)
    [order] = [
        o for o in alpaca.orders.values() if o["client_order_id"] == client_order_id_of(intent)
    ]
    assert redelivered.outcome is Outcome.DUPLICATE
    assert (doc["outcome"], doc.get("broker_order_id")) == ("placed", order["id"])
    assert doc["repair"]["previous_outcome"] == "halted"
    assert order["status"] == "canceled"
