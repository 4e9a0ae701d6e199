"""Where every stored document lives: the collection names, written once, and their builders.

    tenants/{tenant_id}/execution_reservations/{client_intent_id}  one per intent (contract)
    tenants/{tenant_id}/accounts/{broker_account_id}               its settings (contract)
    tenants/{tenant_id}/execution_inflight/{broker_account_id}     its state
    tenants/{tenant_id}/ledger_trades/{broker_order_id}            the ledger (contract)
    tenants/{tenant_id}/paper_orders/{client_order_id}             the paper broker's orders
    tenants/{tenant_id}/ops/execution_kill_switch                  a tenant's switch (contract)
    ops/execution_kill_switch                                      the global switch (contract)
    execution_dead_letters/{dead_letter_id}                        dead letters (contract)
    market_quotes/{symbol}                                         the latest quote

`execution.documents` holds what each document contains.
"""

from __future__ import annotations

from google.cloud import firestore

DocumentRef = firestore.DocumentReference

TENANTS = "tenants"
RESERVATIONS = "execution_reservations"
ACCOUNTS = "accounts"
INFLIGHT = "execution_inflight"
LEDGER = "ledger_trades"
PAPER_ORDERS = "paper_orders"
OPS = "ops"
KILL_SWITCH = "execution_kill_switch"
DEAD_LETTERS = "execution_dead_letters"
QUOTES = "market_quotes"


def tenant_collection(
    db: firestore.Client, tenant_id: str, name: str
) -> firestore.CollectionReference:
    """`tenants/{tenant_id}/{name}`: one of a tenant's collections (the names above)."""
    return db.collection(TENANTS, tenant_id, name)


def reservation_ref(db: firestore.Client, tenant_id: str, client_intent_id: str) -> DocumentRef:
    """`tenants/{tenant_id}/execution_reservations/{client_intent_id}`."""
    return tenant_collection(db, tenant_id, RESERVATIONS).document(client_intent_id)


def account_ref(db: firestore.Client, tenant_id: str, broker_account_id: str) -> DocumentRef:
    """`tenants/{tenant_id}/accounts/{broker_account_id}`."""
    return tenant_collection(db, tenant_id, ACCOUNTS).document(broker_account_id)


def inflight_ref(db: firestore.Client, tenant_id: str, broker_account_id: str) -> DocumentRef:
    """`tenants/{tenant_id}/execution_inflight/{broker_account_id}`: the account's state."""
    return tenant_collection(db, tenant_id, INFLIGHT).document(broker_account_id)


def account_path(tenant_id: str, broker_account_id: str) -> str:
    """The path `account_ref` names, without a client."""
    return f"{TENANTS}/{tenant_id}/{ACCOUNTS}/{broker_account_id}"


def inflight_path(tenant_id: str, broker_account_id: str) -> str:
    """The path `inflight_ref` names, without a client."""
    return f"{TENANTS}/{tenant_id}/{INFLIGHT}/{broker_account_id}"


def ledger_ref(db: firestore.Client, tenant_id: str, broker_order_id: str) -> DocumentRef:
    """`tenants/{tenant_id}/ledger_trades/{broker_order_id}`."""
    return tenant_collection(db, tenant_id, LEDGER).document(broker_order_id)


def paper_order_ref(db: firestore.Client, tenant_id: str, client_order_id: str) -> DocumentRef:
    """`tenants/{tenant_id}/paper_orders/{client_order_id}`."""
    return tenant_collection(db, tenant_id, PAPER_ORDERS).document(client_order_id)


def kill_switch_ref(db: firestore.Client, tenant_id: str | None) -> DocumentRef:
    """`ops/execution_kill_switch`, or `tenants/{tenant_id}/ops/execution_kill_switch`."""
    if tenant_id is None:
        return db.collection(OPS).document(KILL_SWITCH)
    return tenant_collection(db, tenant_id, OPS).document(KILL_SWITCH)


def dead_letter_ref(db: firestore.Client, dead_letter_id: str) -> DocumentRef:
    """`execution_dead_letters/{dead_letter_id}`."""
    return db.collection(DEAD_LETTERS).document(dead_letter_id)


def quote_ref(db: firestore.Client, symbol: str) -> DocumentRef:
    """`market_quotes/{symbol}`."""
    return db.collection(QUOTES).document(symbol)
