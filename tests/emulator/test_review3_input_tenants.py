"""Third review: one tenant's documents claiming another tenant's broker order.

Tenants share one broker account (one key pair), so what tells their orders apart is the client
order id. A long id is hashed (`execution.client_order_ids`) and its owner is found through the
record carrying it. A writer of tenant B's documents (an operator's slip, a compromised job)
copies tenant A's record under B and rewrites its tenant: `kill-switch on --tenant B
--cancel-open` must not cancel A's order, which B's halt does not cover. Runs against the Alpaca
sandbox on loopback and the Firestore emulator.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from google.cloud import firestore
from typer.testing import Result

from devtools.alpaca_sandbox import AlpacaSandbox
from execution.brokers.alpaca import AlpacaBroker
from execution.client_order_ids import HASHED_PREFIX, client_order_id_for
from tests.support.builders import make_order_request, unique
from tests.support.cli import alpaca_cli


@pytest.fixture
def cli(
    firestore_emulator_host: str, firestore_project: str, alpaca: AlpacaSandbox
) -> Callable[..., Result]:
    """The command line with the function's broker settings pointing at the sandbox."""
    return alpaca_cli(firestore_project, alpaca.base_url)


def record(db: firestore.Client, at_tenant: str, fields: dict[str, str]) -> None:
    intent = fields["client_intent_id"]
    db.document(f"tenants/{at_tenant}/execution_reservations/{intent}").set(
        {**fields, "status": "released", "outcome": "placed"}
    )


def test_a_tenants_halt_never_cancels_another_tenants_order_its_documents_claim(
    cli: Callable[..., Result],
    alpaca: AlpacaSandbox,
    alpaca_broker: AlpacaBroker,
    db: firestore.Client,
) -> None:
    # B's path sorts first, so the record a lookup by client order id meets first is B's copy.
    tenant_a, tenant_b, intent = unique("z-tenant"), unique("a-tenant"), "i" * 120
    a_order = client_order_id_for(tenant_a, "acct-1", intent)
    assert a_order.startswith(HASHED_PREFIX)
    alpaca_broker.place_order(
        make_order_request(tenant_id=tenant_a, broker_account_id="acct-1", client_order_id=a_order)
    )
    a_fields = {
        "tenant_id": tenant_a,
        "broker_account_id": "acct-1",
        "client_intent_id": intent,
        "client_order_id": a_order,
    }
    record(db, tenant_a, a_fields)
    record(db, tenant_b, {**a_fields, "tenant_id": tenant_b})  # B's copy, claiming A's order

    result = cli(
        "kill-switch", "on", "--tenant", tenant_b, "--reason", "r", "--cancel-open", "--json"
    )

    told = json.loads(result.stdout)["cancel_open"]
    assert a_order not in [c["client_order_id"] for c in told["cancels"]]
    assert alpaca.orders[a_order]["status"] == "accepted"
