"""Review 3 (found by the simulation, seed 584): a record someone else ended under this attempt's
lease is never taken for this attempt's own release.

An attempt paused inside its broker call, before its order reached the broker. Its lease lapsed;
the sweeper expired the record (`expired`, fate unknown); once no call could land by the clock and
no delivery could be fresh, the reconciler asked the broker, found no order and recorded `stale`
(`BrokerTruth.settle_fate`). Both writes keep the record's `lease_id`: neither is an attempt. The
paused attempt then woke, its order was accepted, and its release read the record: its own lease,
`released`, so "my release landed already" (a commit whose answer was lost). It acked `placed`
while the record said `stale` and named no order: an order the records did not know until the
reconciler's next listing. A released record under this lease counts as this release only where it
says what this release writes; anything else is another writer's verdict, and the release is
fenced: the order is settled into the record (`BrokerTruth.settle`, the broker is the truth).

Through `main` on the Firestore emulator, the real `AlpacaBroker` against the loopback sandbox,
the real sweeper and reconciler, one fake clock.
"""

from __future__ import annotations

from contextlib import suppress

import pytest

from execution.bootstrap import bootstrap
from execution.errors import RetryableError
from tests.support.builders import PausedInsideTheCall, make_intent, reservation, unique
from tests.support.reconciler_truth import (
    World,
    account_counts,
    deliver,
    limit,
    sandbox_settings,
)

NO_DELIVERY_COMES = 3600.0
"""Seconds after which no delivery of the message can be fresh (INTENT_MAX_AGE_SECONDS is 300)
and no broker call of the paused attempt can land by the clock."""


@pytest.mark.parametrize("limited", [True, False], ids=["limited account", "without limits"])
def test_an_order_placed_after_the_reconciler_recorded_stale_is_settled_into_the_record(
    w: World, limited: bool
) -> None:
    intent = make_intent(tenant_id=unique("tenant"))
    if limited:
        limit(w.db, intent, max_daily_orders=5, max_position_qty=5)
    seen: dict[str, object] = {}

    def meanwhile() -> None:
        w.clock.advance(NO_DELIVERY_COMES)
        w.service.sweeper.sweep()
        w.service.reconciler.reconcile()
        seen.update(reservation(w.db, intent.tenant_id, intent.client_intent_id))

    zombie = PausedInsideTheCall(w.broker, meanwhile)
    service = bootstrap(
        sandbox_settings(w.sandbox.base_url, w.project), db=w.db, clock=w.clock, broker=zombie
    )

    with suppress(RetryableError):  # acked or retried: what the record says is the point
        deliver(service, intent, unique("m"), w.clock())

    assert seen["outcome"] == "stale"  # the reconciler's verdict landed while the call was paused
    [order] = w.sandbox.orders.values()
    record = reservation(w.db, intent.tenant_id, intent.client_intent_id)
    assert (record["outcome"], record["broker_order_id"]) == ("placed", order["id"])
    assert record["repair"]["found_by"] == "outlived_attempt 1"
    if limited:
        assert account_counts(w.db, intent) == {"holds": 0, "position": 1, "placed_orders": 1}
