"""Tenant-safe client order ids: one per (tenant, broker account, intent), never shared.

One broker account (one key pair) may serve every tenant and account of a deployment, and brokers
dedupe on `client_order_id` alone, so the id we send must tell intents of different tenants and
accounts apart even where their `client_intent_id`s are equal. The id is a deterministic function
of the three ids, so every attempt of an intent sends (and looks up) the same one:

    ex1-{len(tenant)}-{tenant}-{len(account)}-{account}-{intent}      where it fits in 128
    ex1h-{sha256 of the three ids, hex}                                otherwise

The plain form is readable in the broker's console and injective (the lengths say where each id
ends, whatever `-` or `.` the ids hold); the hashed form keeps the broker's 128-character limit
(Alpaca's) for long ids, collision-free in practice. Both use only `[A-Za-z0-9_.-]`, so the id is
also a valid Firestore document id. The two prefixes tell our orders from any other order the
broker account holds (the reconciler's filter).
"""

from __future__ import annotations

import hashlib
import re

PLAIN_PREFIX = "ex1-"
HASHED_PREFIX = "ex1h-"
MAX_LENGTH = 128
"""Alpaca's limit on `client_order_id`."""

_COUNTED = re.compile(r"(\d{1,3})-")


def client_order_id_for(tenant_id: str, broker_account_id: str, client_intent_id: str) -> str:
    """The client order id every attempt of this intent sends to the broker."""
    plain = (
        f"{PLAIN_PREFIX}{len(tenant_id)}-{tenant_id}-"
        f"{len(broker_account_id)}-{broker_account_id}-{client_intent_id}"
    )
    if len(plain) <= MAX_LENGTH:
        return plain
    # NUL cannot occur in a valid id, so the joined text is injective in the three ids.
    joined = "\0".join((tenant_id, broker_account_id, client_intent_id)).encode()
    return HASHED_PREFIX + hashlib.sha256(joined).hexdigest()


def is_ours(client_order_id: str) -> bool:
    """Whether a broker order's client order id was made by `client_order_id_for`."""
    return client_order_id.startswith((PLAIN_PREFIX, HASHED_PREFIX))


def parse_plain(client_order_id: str) -> tuple[str, str, str] | None:
    """(tenant, account, intent) of a plain-form id; None for a hashed or foreign id."""
    if not client_order_id.startswith(PLAIN_PREFIX):
        return None
    tenant = _take_counted(client_order_id.removeprefix(PLAIN_PREFIX))
    account = _take_counted(tenant[1]) if tenant else None
    if tenant is None or account is None or not account[1]:
        return None
    ids = (tenant[0], account[0], account[1])
    return ids if client_order_id_for(*ids) == client_order_id else None


def _take_counted(text: str) -> tuple[str, str] | None:
    """Split `{n}-{n characters}-{rest}` into the n characters and the rest."""
    match = _COUNTED.match(text)
    if match is None:
        return None
    start, length = match.end(), int(match.group(1))
    value, after = text[start : start + length], text[start + length :]
    if len(value) != length or not after.startswith("-"):
        return None
    return value, after[1:]
