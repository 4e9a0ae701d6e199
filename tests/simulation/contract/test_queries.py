"""Contract: filters, ordering, cursors, limits, collection groups and aggregations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter
from google.cloud.firestore_v1.field_path import FieldPath

from tests.support.builders import unique

T = datetime(2026, 1, 1, tzinfo=UTC)
CORPUS: dict[str, dict[str, Any]] = {
    "d1": {"v": 1, "g": "a"},
    "d2": {"v": 2.5, "g": "a"},
    "d3": {"v": None, "g": "b"},
    "d4": {"g": "b"},
    "d5": {"v": "x", "g": "a"},
    "d6": {"v": T, "g": "c"},
    "d7": {"v": True, "g": "c"},
    "d8": {"v": [1], "g": "c"},
    "d9": {"v": {"k": 1}, "g": "c"},
    "d10": {"v": 2, "g": "a"},
    "d11": {"v": float("nan"), "g": "z"},
    "d12": {"v": b"b", "g": "z"},
}


@pytest.fixture
def corpus(store: Any) -> Any:
    """A collection holding `CORPUS`: one field `v` of every type, some missing or null."""
    col = store.collection(unique("query"))
    batch = store.batch()
    for doc_id, fields in CORPUS.items():
        batch.set(col.document(doc_id), fields)
    batch.commit()
    return col


def ids(query: Any) -> list[str]:
    return [snap.id for snap in query.stream()]


def where(query: Any, field: str, op: str, value: Any) -> Any:
    return query.where(filter=FieldFilter(field, op, value))


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("==", 1, ["d1"]),
        ("==", 1.0, ["d1"]),
        ("==", None, ["d3"]),
        ("==", float("nan"), ["d11"]),
        ("!=", 1, ["d7", "d11", "d10", "d2", "d6", "d5", "d12", "d8", "d9"]),
        ("!=", None, ["d7", "d11", "d1", "d10", "d2", "d6", "d5", "d12", "d8", "d9"]),
        ("!=", float("nan"), ["d7", "d1", "d10", "d2", "d6", "d5", "d12", "d8", "d9"]),
        ("<", 3, ["d1", "d10", "d2"]),
        ("<=", 2, ["d1", "d10"]),
        (">", 1, ["d10", "d2"]),
        (">=", "a", ["d5"]),
        (">", T - timedelta(days=1), ["d6"]),
        ("in", [1, "x", None], ["d1", "d5"]),
        ("not-in", [1, "x"], ["d7", "d11", "d10", "d2", "d6", "d12", "d8", "d9"]),
        ("array_contains", 1, ["d8"]),
    ],
)
def test_filter_semantics(corpus: Any, op: str, value: Any, expected: list[str]) -> None:
    assert ids(where(corpus, "v", op, value)) == expected


def test_default_order_is_by_document_id(corpus: Any) -> None:
    assert ids(corpus) == sorted(CORPUS)


def test_order_by_sorts_across_types_and_skips_documents_without_the_field(corpus: Any) -> None:
    ascending = ["d3", "d7", "d11", "d1", "d10", "d2", "d6", "d5", "d12", "d8", "d9"]
    assert ids(corpus.order_by("v")) == ascending
    assert ids(corpus.order_by("v", direction=firestore.Query.DESCENDING)) == ascending[::-1]


def test_inequality_orders_by_its_field_after_the_explicit_order(corpus: Any) -> None:
    assert ids(where(corpus, "v", ">", 0)) == ["d1", "d10", "d2"]
    by_group = where(corpus, "v", ">", 0).order_by("g", direction=firestore.Query.DESCENDING)
    assert ids(by_group) == ["d2", "d10", "d1"]


def test_equal_values_order_by_document_id(corpus: Any) -> None:
    assert ids(where(corpus, "g", "==", "a").order_by("g")) == ["d1", "d10", "d2", "d5"]
    descending = where(corpus, "g", "==", "a").order_by("g", direction="DESCENDING")
    assert ids(descending) == ["d5", "d2", "d10", "d1"]


def test_order_by_document_id(corpus: Any) -> None:
    by_id = corpus.order_by(FieldPath.document_id())
    assert ids(by_id) == sorted(CORPUS)
    assert ids(by_id.limit(2).start_after(corpus.document("d3").get())) == ["d4", "d5"]


def test_a_descending_scan_of_document_ids_alone_is_refused(corpus: Any) -> None:
    with pytest.raises(gexc.FailedPrecondition):
        ids(corpus.order_by(FieldPath.document_id(), direction="DESCENDING"))


def test_limit_and_start_after_a_snapshot(corpus: Any) -> None:
    after = corpus.document("d2").get()
    assert ids(corpus.order_by("g").limit(3).start_after(after)) == ["d5", "d3", "d4"]
    assert ids(corpus.start_after(after)) == ["d3", "d4", "d5", "d6", "d7", "d8", "d9"]


def test_start_after_field_values(corpus: Any) -> None:
    rest = ["d3", "d4", "d6", "d7", "d8", "d9", "d11", "d12"]
    assert ids(corpus.order_by("g").start_after({"g": "a"})) == rest


def test_paging_with_start_after_visits_every_document_once(corpus: Any) -> None:
    query = where(corpus, "v", "!=", None).order_by("v")
    seen: list[str] = []
    page: list[Any] = []
    while True:
        paged = query.limit(3)
        if page:
            paged = paged.start_after(page[-1])
        page = list(paged.stream())
        seen += [snap.id for snap in page]
        if len(page) < 3:
            break
    assert seen == ids(query)


def test_the_sweepers_query_shape(store: Any) -> None:
    col = store.collection(unique("sweep"))
    base = {"status": "reserved"}
    for doc_id, expires, status in [
        ("late", T + timedelta(seconds=5), "reserved"),
        ("due", T - timedelta(seconds=5), "reserved"),
        ("oldest", T - timedelta(seconds=50), "reserved"),
        ("edge", T, "reserved"),
        ("done", T - timedelta(seconds=60), "released"),
    ]:
        col.document(doc_id).set({**base, "status": status, "expires_at": expires})
    query = (
        where(col, "status", "==", "reserved").where(filter=FieldFilter("expires_at", "<=", T))
    ).order_by("expires_at")
    assert ids(query) == ["oldest", "due", "edge"]


def test_collection_group_spans_parents_and_depths_in_path_order(store: Any) -> None:
    group = unique("group")
    paths = [
        f"t/y/{group}/g2",
        f"{group}/d1",
        f"t/x/{group}/g1",
        f"{group}/d1/{group}/g0",
        "t/x/other/o1",
    ]
    for path in paths:
        store.document(path).set({"v": 1})
    found = [s.reference.path for s in store.collection_group(group).stream()]
    assert found == [f"{group}/d1", f"{group}/d1/{group}/g0", f"t/x/{group}/g1", f"t/y/{group}/g2"]
    assert store.collection_group(group).count().get()[0][0].value == 4


def aggregate(query: Any) -> list[tuple[str, Any, str]]:
    [row] = query.get()
    return [(r.alias, r.value, type(r.value).__name__) for r in row]


def test_count_counts_matches_within_the_limit(corpus: Any) -> None:
    assert aggregate(corpus.count(alias="n")) == [("n", 12, "int")]
    assert aggregate(corpus.limit(3).count(alias="n")) == [("n", 3, "int")]
    # The emulator answers a count of nothing as a float (production answers 0): EMULATOR-FACTS F4.
    assert aggregate(where(corpus, "g", "==", "none").count(alias="n")) == [("n", 0.0, "float")]


def test_sum_adds_numbers_only(corpus: Any) -> None:
    assert aggregate(where(corpus, "g", "==", "a").sum("v", alias="n")) == [("n", 5.5, "float")]
    assert aggregate(where(corpus, "v", "in", [1, 2]).sum("v", alias="n")) == [("n", 3, "int")]
    assert aggregate(where(corpus, "g", "==", "none").sum("v", alias="n")) == [("n", 0.0, "float")]


def test_aggregations_default_aliases_and_sum_excludes_documents_without_the_field(
    corpus: Any,
) -> None:
    assert aggregate(corpus.count()) == [("field_1", 12, "int")]
    both = {alias: value for alias, value, _ in aggregate(corpus.count(alias="c").sum("v", "s"))}
    assert both["c"] == 11  # d4 has no `v`
    assert both["s"] != both["s"]  # NaN among the addends


def test_start_at_a_snapshot_includes_it(corpus: Any) -> None:
    at = corpus.document("d2").get()
    assert ids(corpus.order_by("g").limit(2).start_at(at)) == ["d2", "d5"]


def test_positional_where_warns_as_the_library_does(corpus: Any) -> None:
    with pytest.warns(UserWarning):
        query = corpus.where("v", "==", 1)
    assert ids(query) == ["d1"]
