"""Every query the code runs has its composite index in `firestore.indexes.json`.

The emulator never asks for an index, so a missing one would first fail in production. Each query
builder is listed here; a guard below fails when a module starts querying without being listed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore

from execution.brokers.paper import paper_order_by_id_query, paper_orders_listing_query
from execution.cli.queries import query_shapes
from execution.firestore.account_state import account_states_query
from execution.firestore.placed_records import (
    by_client_order_id_query,
    ended_with_query,
    marked_records_query,
    placed_since_all_tenants_query,
)
from execution.firestore.sweeper_store import expired_leases_query
from execution.models import Outcome

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 1, 5, tzinfo=UTC)

QUERY_BUILDERS: dict[str, Callable[[firestore.Client], list[Any]]] = {
    "execution/firestore/sweeper_store.py": lambda db: [expired_leases_query(db, NOW)],
    "execution/firestore/account_state.py": lambda db: [account_states_query(db)],
    "execution/cli/queries.py": lambda db: list(query_shapes(db, NOW).values()),
    "execution/firestore/placed_records.py": lambda db: [
        placed_since_all_tenants_query(db, NOW),
        ended_with_query(db, Outcome.EXCEPTION),
        by_client_order_id_query(db, "ex1h-x"),
        marked_records_query(db),
    ],
    "execution/brokers/paper.py": lambda db: [
        paper_order_by_id_query(db, "t", "paper-1"),
        paper_orders_listing_query(db, NOW, None),
        paper_orders_listing_query(db, NOW, NOW),
    ],
}


def offline_client() -> firestore.Client:
    return firestore.Client(project="demo-indexes", credentials=AnonymousCredentials())


def required_index(query: Any) -> dict[str, Any] | None:
    """The composite index a query needs: equality fields, then its ordering (None: built-in)."""
    proto = query._to_protobuf()
    [source] = proto.from_
    filters = [f.field_filter for f in proto.where.composite_filter.filters] or (
        [proto.where.field_filter] if proto.where.field_filter.field.field_path else []
    )
    equality = sorted(f.field.field_path for f in filters if f.op.name == "EQUAL")
    ordered = [(o.field.field_path, o.direction.name) for o in proto.order_by]
    inequality = [f.field.field_path for f in filters if f.op.name != "EQUAL"]
    for field in inequality:
        if field not in [name for name, _ in ordered]:
            ordered.insert(0, (field, "ASCENDING"))
    if len(set(equality) | {name for name, _ in ordered}) <= 1:
        return None
    if not ordered and not source.all_descendants:
        return None  # equality filters only: Firestore merges the automatic single-field indexes
    return {
        "collectionGroup": source.collection_id,
        "queryScope": "COLLECTION_GROUP" if source.all_descendants else "COLLECTION",
        "equality": equality,
        "ordered": ordered,
    }


def declared_indexes() -> list[dict[str, Any]]:
    return list(json.loads((ROOT / "firestore.indexes.json").read_text())["indexes"])


def covers(index: dict[str, Any], need: dict[str, Any]) -> bool:
    if (index["collectionGroup"], index["queryScope"]) != (
        need["collectionGroup"],
        need["queryScope"],
    ):
        return False
    fields = [(f["fieldPath"], f.get("order", "ASCENDING")) for f in index["fields"]]
    head, tail = fields[: len(need["equality"])], fields[len(need["equality"]) :]
    return sorted(name for name, _ in head) == need["equality"] and tail == need["ordered"]


def required_field_override(query: Any) -> dict[str, Any] | None:
    """The collection-group single-field index a query needs (Firestore keeps none by default)."""
    proto = query._to_protobuf()
    [source] = proto.from_
    if not source.all_descendants:
        return None
    filters = [f.field_filter for f in proto.where.composite_filter.filters] or (
        [proto.where.field_filter] if proto.where.field_filter.field.field_path else []
    )
    fields = {f.field.field_path: "ASCENDING" for f in filters}
    fields.update({o.field.field_path: o.direction.name for o in proto.order_by})
    if len(fields) != 1:
        return None  # none (plain scan of the group) or several (a composite index)
    [(field, order)] = fields.items()
    return {"collectionGroup": source.collection_id, "fieldPath": field, "order": order}


def declared_field_overrides() -> list[dict[str, Any]]:
    return list(json.loads((ROOT / "firestore.indexes.json").read_text())["fieldOverrides"])


def overrides_cover(override: dict[str, Any], need: dict[str, Any]) -> bool:
    if (override["collectionGroup"], override["fieldPath"]) != (
        need["collectionGroup"],
        need["fieldPath"],
    ):
        return False
    return any(
        index.get("queryScope") == "COLLECTION_GROUP" and index.get("order") == need["order"]
        for index in override["indexes"]
    )


@pytest.mark.parametrize("module", sorted(QUERY_BUILDERS))
def test_each_query_has_its_composite_index_declared(module: str) -> None:
    for query in QUERY_BUILDERS[module](offline_client()):
        need = required_index(query)

        assert need is None or any(covers(index, need) for index in declared_indexes()), need


@pytest.mark.parametrize("module", sorted(QUERY_BUILDERS))
def test_each_collection_group_query_on_one_field_has_its_field_override(module: str) -> None:
    for query in QUERY_BUILDERS[module](offline_client()):
        need = required_field_override(query)

        assert need is None or any(
            overrides_cover(override, need) for override in declared_field_overrides()
        ), need


def test_every_module_that_queries_firestore_is_checked_here() -> None:
    querying = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "execution").rglob("*.py")
        if re.search(r"\.where\(|\.order_by\(|collection_group\(", path.read_text())
    }

    assert querying <= set(QUERY_BUILDERS), f"add their queries to QUERY_BUILDERS: {querying}"


def test_the_checker_refuses_an_index_of_the_wrong_scope_or_fields() -> None:
    need = required_index(expired_leases_query(offline_client(), NOW))
    [declared] = [i for i in declared_indexes() if covers(i, need)]

    wrong_scope = {**declared, "queryScope": "COLLECTION"}
    wrong_order = {**declared, "fields": list(reversed(declared["fields"]))}

    assert need is not None
    assert covers(declared, need)
    assert not covers(wrong_scope, need)
    assert not covers(wrong_order, need)
