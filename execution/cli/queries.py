"""Every Firestore query the command line runs, and the plain rows it reads out of them.

Production Firestore serves a query only from an index, and the emulator never checks, so each
query shape here is listed by `query_shapes` for `tests/unit/test_firestore_indexes.py`:

- in-flight / by status, across tenants: `status == S` ordered by `expires_at`, on the
  `execution_reservations` collection group: the sweeper's composite index serves it.
- stuck (`reserved`, `expires_at <= now`): the sweeper's own query (`expired_leases_query`).
- one tenant's reservations: equality filters only (`broker_account_id`, `status`) on the
  tenant's collection: automatic single-field indexes, merged by Firestore; no composite needed.
- recent outcomes: ordered by `released_at` descending; for one tenant an automatic single-field
  index, across tenants a collection-group single-field index (a `fieldOverrides` entry).
- recent dead letters: `execution_dead_letters` ordered by `recorded_at`: automatic.
- one intent's ledger entries: `client_intent_id ==` on the tenant's `ledger_trades`: automatic.
- kill switches: the `ops` collection group without filters: needs no index.

None of these runs inside a transaction (a query there locks the collection id:
docs/EMULATOR-FACTS.md, F2).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from execution.documents import (
    DeadLetterDocument,
    KillSwitchDocument,
    MalformedDocumentError,
    reservation_from_document,
)
from execution.firestore.paths import (
    ACCOUNTS,
    DEAD_LETTERS,
    LEDGER,
    OPS,
    RESERVATIONS,
    TENANTS,
    tenant_collection,
)
from execution.firestore.support import CallPolicy
from execution.firestore.sweeper_store import expired_leases_query
from execution.models import validate_document_id
from execution.reservations import ReservationStatus
from execution.settings import AgentMode
from execution.text import UnreadableJsonError, read_json


@dataclass(frozen=True)
class ReservationRow:
    """A reservation document as the command line shows it; a malformed one still lists."""

    path: str
    tenant_id: str
    client_intent_id: str
    broker_account_id: str = ""
    symbol: str = ""
    amount_usd: float = 0.0
    status: str = ""
    outcome: str | None = None
    attempt: int = 1
    created_at: datetime | None = None
    expires_at: datetime | None = None
    released_at: datetime | None = None
    error: str | None = None
    broker_order_id: str | None = None
    lease_id: str = ""
    client_order_id: str = ""
    """What the broker knows the order by (the intent's id on records older than the field)."""
    repair: dict[str, Any] | None = None
    """Set where the record was brought to what the broker holds."""
    problem: str | None = None
    """Why the document cannot be read; its fields beyond the path's ids are then blank."""

    @classmethod
    def from_snapshot(cls, snap: firestore.DocumentSnapshot[Any]) -> ReservationRow:
        """Read the document through its model; a malformed one lists with its `problem`, and
        so does one whose ids disagree with where it lies (its tenant is its path's)."""
        path = snap.reference.path
        tenant_id = tenant_of(snap.reference, RESERVATIONS)
        try:
            record = reservation_from_document(snap.to_dict() or {})
            problem = _misplaced(record.tenant_id, record.client_intent_id, tenant_id, snap.id)
        except MalformedDocumentError as exc:
            problem = str(exc)
        if problem is not None:
            return cls(
                path=path, tenant_id=tenant_id or "", client_intent_id=snap.id, problem=problem
            )
        shown = {f.name: getattr(record, f.name) for f in fields(cls) if hasattr(record, f.name)}
        shown["status"] = record.status.value
        shown["outcome"] = record.outcome.value if record.outcome else None
        return cls(path=path, **shown)

    def is_stuck(self, now: datetime) -> bool:
        """Still `reserved` although its lease has lapsed: its invocation died."""
        return (
            self.status == ReservationStatus.RESERVED.value
            and self.expires_at is not None
            and self.expires_at <= now
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (times as ISO-8601)."""
        return {k: json_ready(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class KillSwitchRow:
    """One kill-switch document: global (`tenant_id` None) or a tenant's."""

    path: str
    tenant_id: str | None
    enabled: bool
    reason: str | None
    updated_by: str | None
    updated_at: datetime | None
    broker_account_id: str | None = None
    """Set for an account's halt (its settings document's `trading_mode: OFF`)."""

    @classmethod
    def from_snapshot(cls, snap: firestore.DocumentSnapshot[Any]) -> KillSwitchRow:
        """Read a switch document; an absent one reads as off."""
        switch = KillSwitchDocument.read(snap.to_dict() if snap.exists else None)
        parent = snap.reference.parent.parent
        return cls(
            path=snap.reference.path,
            tenant_id=parent.id if parent is not None else None,
            **switch.model_dump(),
        )

    @classmethod
    def from_account_snapshot(cls, snap: firestore.DocumentSnapshot[Any]) -> KillSwitchRow:
        """An account halted by its settings document (`trading_mode: OFF`), with who and why
        from its `kill_switch` map where `kill-switch on --account` wrote one."""
        halt = (snap.to_dict() or {}).get("kill_switch")
        switch = KillSwitchDocument.read(halt if isinstance(halt, dict) else None)
        tenant = snap.reference.parent.parent
        return cls(
            path=snap.reference.path,
            tenant_id=tenant.id if tenant is not None else None,
            enabled=True,
            reason=switch.reason if switch.enabled else "trading_mode OFF (not by kill-switch)",
            updated_by=switch.updated_by if switch.enabled else None,
            updated_at=switch.updated_at if switch.enabled else None,
            broker_account_id=snap.id,
        )

    @property
    def scope(self) -> str:
        """`global`, `tenant <id>` or `account <tenant>/<account>`."""
        if self.tenant_id is None:
            return "global"
        if self.broker_account_id is not None:
            return f"account {self.tenant_id}/{self.broker_account_id}"
        return f"tenant {self.tenant_id}"

    def as_fields(self) -> dict[str, Any]:
        """The fields as they are (for a copy with one changed)."""
        return asdict(self)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {k: json_ready(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class DeadLetterRow:
    """One `execution_dead_letters` document."""

    message_id: str
    reason: str
    recorded_at: datetime | None
    data: str
    dead_letter_id: str = ""
    """The document's id (`dead-letters ID` reads it)."""

    @classmethod
    def from_snapshot(cls, snap: firestore.DocumentSnapshot[Any]) -> DeadLetterRow:
        """Read a dead letter; a malformed one lists with its problem as the reason."""
        try:
            letter = DeadLetterDocument.parse(snap.to_dict() or {})
        except MalformedDocumentError as exc:
            return cls(snap.id, str(exc), None, "", snap.id)
        return cls(
            message_id=letter.message_id or snap.id,
            reason=letter.reason,
            recorded_at=letter.recorded_at,
            data=letter.data,
            dead_letter_id=snap.id,
        )

    def named_ids(self) -> tuple[str | None, str | None, str | None]:
        """(tenant_id, broker_account_id, client_intent_id) the payload names, each None where it
        is absent or not a valid id (a payload that is not a JSON object names none)."""
        try:
            # The intake's reader: a payload it refused for nesting or for a key written twice
            # must neither crash this reader nor name whichever repeated id came last.
            payload = read_json(self.data)
        except UnreadableJsonError:
            payload = None
        named = payload if isinstance(payload, dict) else {}
        return (
            _valid_id(named.get("tenant_id")),
            _valid_id(named.get("broker_account_id")),
            _valid_id(named.get("client_intent_id")),
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {k: json_ready(v) for k, v in asdict(self).items()}


def tenant_of(ref: firestore.DocumentReference, collection: str) -> str | None:
    """The tenant id of a document at `tenants/{tenant_id}/{collection}/{id}`, else None.

    A collection-group query finds a collection of that name under any parent: a document at
    `elsewhere/t/ops/execution_kill_switch` or `tenants/x/accounts/t/ops/...` is no tenant's
    switch (the service reads none of them), so its parent's id must not be shown as a tenant.
    """
    parts: list[str] = str(ref.path).split("/")
    if len(parts) == 4 and parts[0] == TENANTS and parts[2] == collection:
        return parts[1]
    return None


def _misplaced(
    tenant_field: str, intent_field: str, tenant_id: str | None, doc_id: str
) -> str | None:
    """Why a record's ids disagree with its path (hand-edited, or copied), None if they agree:
    the service reads a record by its path, so the fields would show another intent's story."""
    if tenant_id is None:
        return f"not at {TENANTS}/{{tenant_id}}/{RESERVATIONS}/{{client_intent_id}}"
    if (tenant_field, intent_field) != (tenant_id, doc_id):
        return "its tenant_id or client_intent_id field disagrees with its path"
    return None


# -- query builders (each shape is listed in `query_shapes`) -----------------------------------


def tenant_reservations_query(
    db: firestore.Client,
    tenant_id: str,
    *,
    broker_account_id: str | None = None,
    status: str | None = None,
) -> firestore.Query:
    """One tenant's reservations, equality filters only (merged single-field indexes)."""
    query = firestore.Query(tenant_collection(db, tenant_id, RESERVATIONS))
    if broker_account_id is not None:
        query = query.where(filter=FieldFilter("broker_account_id", "==", broker_account_id))
    if status is not None:
        query = query.where(filter=FieldFilter("status", "==", status))
    return query


def reservations_by_status_query(db: firestore.Client, status: str) -> firestore.Query:
    """Every tenant's reservations in `status`, soonest expiry first (the sweeper's index)."""
    return (
        db.collection_group(RESERVATIONS)
        .where(filter=FieldFilter("status", "==", status))
        .order_by("expires_at")
    )


def stuck_reservations_query(db: firestore.Client, now: datetime) -> firestore.Query:
    """`reserved` past `expires_at`, oldest first: exactly what the sweeper would expire."""
    return expired_leases_query(db, now)


def recent_outcomes_query(db: firestore.Client, tenant_id: str | None = None) -> firestore.Query:
    """Reservations by `released_at`, newest first (still-reserved ones, null there, sort last)."""
    source: Any = (
        db.collection_group(RESERVATIONS)
        if tenant_id is None
        else tenant_collection(db, tenant_id, RESERVATIONS)
    )
    query: firestore.Query = source.order_by("released_at", direction=firestore.Query.DESCENDING)
    return query


def recent_dead_letters_query(db: firestore.Client) -> firestore.Query:
    """Dead letters, newest first."""
    return db.collection(DEAD_LETTERS).order_by("recorded_at", direction=firestore.Query.DESCENDING)


def dead_letter_by_message_query(db: firestore.Client, message_id: str) -> firestore.Query:
    """Dead letters recorded for one Pub/Sub message id (one equality: an automatic index)."""
    query: firestore.Query = db.collection(DEAD_LETTERS).where(
        filter=FieldFilter("message_id", "==", message_id)
    )
    return query


def ledger_of_intent_query(
    db: firestore.Client, tenant_id: str, client_intent_id: str
) -> firestore.Query:
    """A tenant's ledger entries written for one intent (one equality: an automatic index)."""
    ledger = tenant_collection(db, tenant_id, LEDGER)
    query: firestore.Query = ledger.where(
        filter=FieldFilter("client_intent_id", "==", client_intent_id)
    )
    return query


def halted_accounts_query(db: firestore.Client, tenant_id: str | None) -> firestore.Query:
    """Accounts whose settings say `trading_mode: OFF` (halted), of one tenant or of all."""
    source: Any = (
        db.collection_group(ACCOUNTS)
        if tenant_id is None
        else tenant_collection(db, tenant_id, ACCOUNTS)
    )
    query: firestore.Query = source.where(
        filter=FieldFilter("trading_mode", "==", AgentMode.OFF.value)
    )
    return query


def kill_switches_query(db: firestore.Client) -> firestore.Query:
    """Every `ops` collection (the root one and each tenant's); keep `execution_kill_switch`."""
    return db.collection_group(OPS)


def query_shapes(db: firestore.Client, now: datetime) -> dict[str, firestore.Query]:
    """Each distinct query this module can send, for the index checks."""
    return {
        "tenant, no filter": tenant_reservations_query(db, "t"),
        "tenant, account": tenant_reservations_query(db, "t", broker_account_id="a"),
        "tenant, status": tenant_reservations_query(db, "t", status="reserved"),
        "tenant, account and status": tenant_reservations_query(
            db, "t", broker_account_id="a", status="reserved"
        ),
        "by status, all tenants": reservations_by_status_query(db, "reserved"),
        "stuck": stuck_reservations_query(db, now),
        "recent outcomes, all tenants": recent_outcomes_query(db),
        "recent outcomes, one tenant": recent_outcomes_query(db, "t"),
        "recent dead letters": recent_dead_letters_query(db),
        "dead letter by message id": dead_letter_by_message_query(db, "m"),
        "kill switches": kill_switches_query(db),
        "halted accounts, all tenants": halted_accounts_query(db, None),
        "halted accounts, one tenant": halted_accounts_query(db, "t"),
        "ledger of one intent": ledger_of_intent_query(db, "t", "i"),
    }


# -- reading -----------------------------------------------------------------------------------


def read_pages(
    query: firestore.Query,
    policy: CallPolicy,
    *,
    page_size: int = 300,
    limit: int | None = None,
    keep: Callable[[firestore.DocumentSnapshot[Any]], bool] = lambda _snap: True,
) -> Iterator[firestore.DocumentSnapshot[Any]]:
    """Snapshots of `query` page by page (each call bounded by `policy`), at most `limit` kept.

    Paging with `start_after` needs an ordered query or the default document-id order; both hold
    for every query above.
    """
    kept = 0
    after: firestore.DocumentSnapshot[Any] | None = None
    while True:
        page_query = query.limit(page_size)
        if after is not None:
            page_query = page_query.start_after(after)
        page = list(page_query.stream(**policy.kwargs()))
        for snap in page:
            if keep(snap):
                yield snap
                kept += 1
                if limit is not None and kept >= limit:
                    return
        if len(page) < page_size:
            return
        after = page[-1]


def json_ready(value: Any) -> Any:
    """`value` with datetimes as ISO-8601 strings, nested maps included."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    return value.isoformat() if isinstance(value, datetime) else value


def _valid_id(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return validate_document_id(value)
    except ValueError:
        return None
