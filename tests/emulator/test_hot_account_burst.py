"""A burst of 64 intents on one fully limited account, on one instance: no lost-race answers.

Sixty-four threads share one service, as the invocations of one instance with concurrency do,
and each delivers one intent at the same instant to one account that sets every counted limit
(room for all of them). Each answer is what `main` makes of it: a result is acked, a retryable
error is a redelivery. Contention on the account's state document must be absorbed inside the
acquire: no `ReservationContentionError` may reach that answer, and every intent is placed with
one broker order.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

from google.cloud import firestore

from execution.brokers.paper import PaperBroker
from execution.clock import system_clock
from execution.errors import RetryableError
from execution.firestore.reservations import inflight_ref
from execution.firestore.support import CallPolicy
from execution.models import ExecutionResult, TradeIntent
from tests.support.builders import CountingBroker, emulator_service, fast_settings, make_intent
from tests.support.positions import positions_of

BURST = 64
ROOMY_LIMITS = {
    "max_inflight_usd": 1e9,
    "max_order_notional_usd": 1e6,
    "max_daily_orders": 1000,
    "max_position_qty": 1e6,
}
# Patient store deadlines: on a busy shared machine a 2 s deadline turns slow answers into retries
# that say nothing about contention.
PATIENT = CallPolicy(timeout_seconds=10.0)
SETTINGS = fast_settings(firestore_timeout_seconds=10.0)


def answer_of(deliver: Callable[[], ExecutionResult]) -> str:
    """What `main` answers for one delivery: the outcome (ack) or the retryable error's name."""
    try:
        result = deliver()
    except RetryableError as exc:
        return type(exc).__name__
    return str(result.outcome.value)


def test_a_burst_of_64_intents_on_one_limited_account_never_answers_contention(
    db: firestore.Client,
) -> None:
    first = make_intent()
    tenant, account = first.tenant_id, first.broker_account_id
    db.collection("tenants", tenant, "accounts").document(account).set(ROOMY_LIMITS)
    broker = CountingBroker(PaperBroker(db, clock=system_clock, policy=PATIENT))
    engine = emulator_service(db, system_clock, settings=SETTINGS, broker=broker).engine
    intents = [make_intent(broker_account_id=account, qty=1.0) for _ in range(BURST)]
    answers: Counter[str] = Counter()
    lock = threading.Lock()
    start = threading.Barrier(BURST)

    def deliver(intent: TradeIntent) -> None:
        start.wait()
        answer = answer_of(lambda: engine.execute_intent(intent))
        with lock:
            answers[answer] += 1

    threads = [threading.Thread(target=deliver, args=(i,)) for i in intents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)  # a bound against a hang, not a performance assertion

    assert answers["ReservationContentionError"] == 0, answers
    assert answers == Counter({"placed": BURST}), answers
    assert broker.place_calls == BURST
    state = inflight_ref(db, tenant, account).get().to_dict() or {}
    assert (state.get("leases"), positions_of(state)) == ({}, {"AAPL": float(BURST)})
    print(f"answers={dict(answers)}")  # reported by `pytest -s`
