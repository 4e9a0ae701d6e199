"""Contract: atomic batches, get_all, and what the store refuses (ids, names, sizes, types)."""

from __future__ import annotations

import decimal
import functools
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1 import _helpers

from tests.support.builders import unique


def collection(db: Any) -> Any:
    return db.collection(unique("contract"))


def test_batch_writes_share_one_commit_time_and_apply_in_order(store: Any) -> None:
    col = collection(store)
    batch = store.batch()
    batch.set(col.document("a"), {"n": 1})
    batch.update(col.document("a"), {"m": 2})
    batch.create(col.document("b"), {"n": 1})
    results = batch.commit()
    assert len({r.update_time for r in results}) == 1
    assert col.document("a").get().to_dict() == {"n": 1, "m": 2}
    assert col.document("b").get().update_time == results[0].update_time


@pytest.mark.parametrize(
    ("failing", "error"),
    [
        ("create-existing", gexc.AlreadyExists),
        ("update-missing", gexc.NotFound),
        ("stale-precondition", gexc.FailedPrecondition),
        ("reserved-id", gexc.InvalidArgument),
    ],
)
def test_a_batch_lands_whole_or_not_at_all(store: Any, failing: str, error: type) -> None:
    col = collection(store)
    existing, other = col.document("existing"), col.document("other")
    existing.create({"n": 0})
    version = other.create({"n": 0}).update_time
    other.update({"n": 1})
    batch = store.batch()
    batch.set(col.document("fresh"), {"n": 1})
    batch.update(
        existing, {"n": 2}, option=store.write_option(last_update_time=existing.get().update_time)
    )
    if failing == "create-existing":
        batch.create(other, {"n": 3})
    elif failing == "update-missing":
        batch.update(col.document("missing"), {"n": 3})
    elif failing == "stale-precondition":
        batch.update(other, {"n": 3}, option=store.write_option(last_update_time=version))
    else:
        batch.set(col.document("__reserved__"), {"n": 3})
    with pytest.raises(error):
        batch.commit()
    assert not col.document("fresh").get().exists
    assert existing.get().to_dict() == {"n": 0}


def test_one_document_written_twice_in_a_batch(store: Any) -> None:
    col = collection(store)
    doc = col.document("a")
    version = doc.create({"n": 0}).update_time
    batch = store.batch()
    batch.update(doc, {"n": 1}, option=store.write_option(last_update_time=version))
    batch.update(doc, {"m": 1})
    batch.create(col.document("b"), {"n": 1})
    batch.set(col.document("b"), {"n": 2})
    batch.update(col.document("b"), {"m": 2})
    batch.commit()
    assert doc.get().to_dict() == {"n": 1, "m": 1}
    assert col.document("b").get().to_dict() == {"n": 2, "m": 2}


def test_a_batch_may_not_create_a_document_it_already_wrote(store: Any) -> None:
    doc = collection(store).document("a")
    batch = store.batch()
    batch.set(doc, {"n": 1})
    batch.create(doc, {"n": 2})
    with pytest.raises(gexc.InvalidArgument):
        batch.commit()
    assert not doc.get().exists


def test_a_batch_may_not_hold_two_update_times_for_one_document(store: Any) -> None:
    doc = collection(store).document("a")
    first = doc.create({"n": 0}).update_time
    second = doc.update({"n": 1}).update_time
    batch = store.batch()
    batch.update(doc, {"n": 2}, option=store.write_option(last_update_time=second))
    batch.update(doc, {"n": 3}, option=store.write_option(last_update_time=first))
    with pytest.raises(gexc.InvalidArgument):
        batch.commit()
    assert doc.get().to_dict() == {"n": 1}


def test_write_results_of_deletes_and_transforms(store: Any) -> None:
    col = collection(store)
    col.document("a").set({"n": 1})
    batch = store.batch()
    batch.delete(col.document("a"))
    batch.delete(col.document("missing"))
    batch.set(col.document("b"), {"n": firestore.Increment(2), "m": 1})
    deleted, missing, incremented = batch.commit()
    assert (deleted.update_time, missing.update_time) == (None, None)
    assert incremented.update_time == batch.commit_time
    decoded = [_helpers.decode_value(v, None) for v in incremented.transform_results]
    assert decoded == [2]


def test_empty_batch_commits_nothing(store: Any) -> None:
    assert store.batch().commit() == []


def test_a_committed_batch_is_empty(store: Any) -> None:
    col = collection(store)
    batch = store.batch()
    batch.set(col.document("a"), {"n": 1})
    assert len(batch.commit()) == 1
    assert batch.commit() == []


def test_get_all_returns_each_distinct_document_once(store: Any) -> None:
    col = collection(store)
    col.document("a").create({"n": 1})
    refs = [col.document("a"), col.document("missing"), col.document("a")]
    snaps = {s.reference.path: s for s in store.get_all(refs)}
    assert sorted(snaps) == sorted({r.path for r in refs})
    assert snaps[col.document("a").path].to_dict() == {"n": 1}
    missing = snaps[col.document("missing").path]
    assert (missing.exists, missing.to_dict(), missing.update_time) == (False, None, None)


@pytest.mark.parametrize("bad_id", ["__x__", ".", "..", ""])
def test_invalid_document_ids_are_refused_by_the_server(store: Any, bad_id: str) -> None:
    doc = collection(store).document(bad_id)
    with pytest.raises(gexc.InvalidArgument):
        doc.set({"a": 1})
    with pytest.raises(gexc.InvalidArgument):
        doc.get()
    with pytest.raises(gexc.InvalidArgument):
        list(store.get_all([doc]))


def test_an_id_over_1500_bytes_cannot_be_written_and_reads_as_missing(store: Any) -> None:
    doc = collection(store).document("x" * 1501)
    with pytest.raises(gexc.InvalidArgument):
        doc.set({"a": 1})
    assert not doc.get().exists
    assert [s.exists for s in store.get_all([doc])] == [False]


def test_reserved_collection_id_is_refused(store: Any) -> None:
    with pytest.raises(gexc.InvalidArgument):
        store.collection(f"__{unique('c')}__").document("a").set({"a": 1})


def test_longest_id_is_accepted(store: Any) -> None:
    doc = collection(store).document("x" * 1500)
    doc.set({"a": 1})
    assert doc.get().exists


def test_an_id_with_a_slash_is_a_path_the_client_refuses(store: Any) -> None:
    with pytest.raises(ValueError):
        collection(store).document("a/b")


@pytest.mark.parametrize(
    "fields",
    [{"__x__": 1}, {"__name__": 1}, {"m": {"__x__": 1}}],
    ids=["top", "name", "nested"],
)
def test_reserved_field_names_are_refused_by_the_server(store: Any, fields: dict[str, Any]) -> None:
    doc = collection(store).document("a")
    with pytest.raises(gexc.InvalidArgument):
        doc.set(fields)
    assert not doc.get().exists


def test_reserved_names_in_update_paths_are_refused(store: Any) -> None:
    doc = collection(store).document("a")
    doc.create({"m": {}})
    with pytest.raises(gexc.InvalidArgument):
        doc.update({"m.__x__": 1})
    assert doc.get().to_dict() == {"m": {}}


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ({"": 1}, ValueError),
        ({"m": {"": 1}}, ValueError),
        ({"m": {1: 2}}, ValueError),
        ({"a": 2**63}, ValueError),
        ({"a": decimal.Decimal(1)}, TypeError),
    ],
    ids=["empty-name", "empty-nested-name", "int-key", "int-overflow", "decimal"],
)
def test_values_the_client_cannot_encode_raise_before_any_call(
    store: Any, value: dict[str, Any], error: type
) -> None:
    doc = collection(store).document("a")
    batch = store.batch()
    with pytest.raises(error):
        batch.set(doc, value)
    assert not doc.get().exists


def nested(depth: int) -> dict[str, Any]:
    return functools.reduce(lambda inner, _: {"m": inner}, range(depth), {"x": 1})


def test_maps_nest_twenty_deep_and_no_deeper(store: Any) -> None:
    col = collection(store)
    col.document("ok").set(nested(20))
    with pytest.raises(gexc.InvalidArgument):
        col.document("deep").set(nested(21))
    assert col.document("ok").get().exists and not col.document("deep").get().exists


def test_arrays_cannot_hold_arrays(store: Any) -> None:
    with pytest.raises(gexc.InvalidArgument):
        collection(store).document("a").set({"a": [[1]]})


def test_a_value_over_1_mib_is_refused(store: Any) -> None:
    col = collection(store)
    col.document("ok").set({"a": "x" * 1_048_487})
    for name, value in [("str", "x" * 1_048_488), ("bytes", b"x" * 1_048_488)]:
        with pytest.raises(gexc.InvalidArgument):
            col.document(name).set({"a": value})
    with pytest.raises(gexc.InvalidArgument):
        col.document("nested").set({"m": {"a": "x" * 1_048_488}})


def test_a_document_over_1_mib_is_refused(store: Any) -> None:
    doc = collection(store).document("a")
    with pytest.raises(gexc.InvalidArgument):
        doc.set({"a": "x" * 600_000, "b": "y" * 600_000})
    doc.set({"a": "x" * 600_000})
    with pytest.raises(gexc.InvalidArgument):
        doc.update({"b": "y" * 600_000})
    assert set(doc.get().to_dict()) == {"a"}
