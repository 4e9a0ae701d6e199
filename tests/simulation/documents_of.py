"""A tenant's documents as one comparable value, whichever store holds them.

Lease ids and paper order ids are random (uuid4): each is replaced by a name derived from the
intent it belongs to, so two runs of one scenario on two stores compare equal field by field.
"""

from __future__ import annotations

from typing import Any

TENANT_COLLECTIONS = (
    "execution_reservations",
    "execution_inflight",
    "accounts",
    "paper_orders",
    "ledger_trades",
)


def tenant_documents(db: Any, tenant_id: str) -> dict[str, dict[str, Any]]:
    """`{collection/id: fields}` of every document of `tenant_id`, random ids named."""
    raw = {
        f"{name}/{snap.id}": snap.to_dict()
        for name in TENANT_COLLECTIONS
        for snap in db.collection("tenants", tenant_id, name).stream()
    }
    names: dict[str, str] = {}
    for path, data in raw.items():
        if path.startswith("execution_reservations/"):
            names[data["lease_id"]] = f"lease:{data['client_intent_id']}#{data['attempt']}"
        if path.startswith("paper_orders/"):
            names[data["broker_order_id"]] = f"order:{data['client_order_id']}"
    return {_renamed(path, names): _renamed(data, names) for path, data in raw.items()}


def _renamed(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {_renamed(k, names): _renamed(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_renamed(v, names) for v in value]
    if isinstance(value, str):
        for random_id, name in names.items():
            value = value.replace(random_id, name)
    return value
