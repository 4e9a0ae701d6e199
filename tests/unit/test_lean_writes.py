"""`execution.firestore.lean_writes` adds to a batch exactly the `Write` the client library adds.

Compared as deterministic protobuf bytes (map order fixed), for every shape the adapters write
and for generated documents; what the encoder does not take is handed to the library, so it
must come out equal too.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from google.api_core.datetime_helpers import DatetimeWithNanoseconds
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore
from hypothesis import given, settings
from hypothesis import strategies as st
from proto.datetime_helpers import DatetimeWithNanoseconds as ServerTime

from execution.documents import ended_fields, reservation_to_document
from execution.firestore import lean_writes
from execution.models import Outcome
from execution.reservations import ReservationRequest, ReservationStatus, new_record

NOW = datetime(2026, 12, 1, 14, 30, 5, 123456, tzinfo=UTC)
SERVER_TIME = ServerTime(2026, 12, 1, 14, 30, 5, nanosecond=123456789, tzinfo=UTC)
"""An update time as snapshots and commits answer it (proto-plus's nanosecond datetime)."""
VALUE_TIME = DatetimeWithNanoseconds(2026, 12, 1, 14, 30, 5, nanosecond=987654321, tzinfo=UTC)
"""A stored time as documents decode it (api-core's nanosecond datetime)."""


@pytest.fixture(scope="module")
def db() -> firestore.Client:
    return firestore.Client(project="demo-lean-writes", credentials=AnonymousCredentials())


def _bytes(batch: firestore.WriteBatch) -> list[bytes]:
    return [pb._pb.SerializeToString(deterministic=True) for pb in batch._write_pbs]


def _same(
    db: firestore.Client,
    lean: Callable[[firestore.WriteBatch], None],
    library: Callable[[firestore.WriteBatch], None],
) -> None:
    ours, theirs = db.batch(), db.batch()
    lean(ours)
    library(theirs)
    assert _bytes(ours) == _bytes(theirs)


def _ref(db: firestore.Client) -> firestore.DocumentReference:
    return db.collection("tenants", "t-1", "execution_reservations").document("intent-1")


def _reservation() -> dict[str, Any]:
    request = ReservationRequest(
        tenant_id="t-1",
        broker_account_id="acct-1",
        client_intent_id="intent-1",
        symbol="BRK.B",
        side="buy",
        qty=3.0,
        amount_usd=1234.5,
        payload_hash="f" * 64,
        client_order_id="ex1-3-t-1-6-acct-1-intent-1",
        enforce_budget=True,
    )
    record = new_record(
        request,
        previous=None,
        lease_id="lease-1",
        now=NOW,
        ttl=timedelta(seconds=600),
        counts_against_budget=True,
    )
    return reservation_to_document(record)


def test_a_reservation_create_is_the_librarys(db: firestore.Client) -> None:
    data = _reservation()
    _same(
        db,
        lambda b: lean_writes.create(b, _ref(db), data),
        lambda b: b.create(_ref(db), data),
    )


@pytest.mark.parametrize("version", [SERVER_TIME, VALUE_TIME, NOW])
def test_a_fenced_update_is_the_librarys(db: firestore.Client, version: datetime) -> None:
    ended = ended_fields(
        ReservationStatus.RELEASED,
        Outcome.PLACED,
        error=None,
        released_at=NOW,
        purge_at=NOW + timedelta(days=30),
    )
    data = {**ended, "broker_order_id": "paper-1", "counted_lease_id": None}
    option = firestore.Client.write_option(last_update_time=version)
    _same(
        db,
        lambda b: lean_writes.update(b, _ref(db), data, option=option),
        lambda b: b.update(_ref(db), data, option=option),
    )


def test_an_update_without_a_time_requires_the_document_to_exist(db: firestore.Client) -> None:
    data = {**_reservation(), "nested": {"a": 1, "b": {"c": None}}}
    _same(
        db,
        lambda b: lean_writes.update(b, _ref(db), data),
        lambda b: b.update(_ref(db), data),
    )


def test_a_placed_orders_merge_with_increments_and_deletes_is_the_librarys(
    db: firestore.Client,
) -> None:
    data = {
        "positions": {"BRK.B": firestore.Increment(-2.5), "AAPL": firestore.Increment(1.0)},
        "placed_orders": {
            "2026-12-01": firestore.Increment(1),
            "2026-11-27": firestore.DELETE_FIELD,
        },
        "leases": {"lease-1": firestore.DELETE_FIELD},
    }
    _same(
        db,
        lambda b: lean_writes.merge(b, _ref(db), data),
        lambda b: b.set(_ref(db), data, merge=True),
    )


def test_a_merge_of_increments_alone_keeps_an_empty_mask(db: firestore.Client) -> None:
    # Without a mask the write would replace the whole document with nothing.
    data = {"positions": {"AAPL": firestore.Increment(1.0)}}
    _same(
        db,
        lambda b: lean_writes.merge(b, _ref(db), data),
        lambda b: b.set(_ref(db), data, merge=True),
    )
    batch = db.batch()
    lean_writes.merge(batch, _ref(db), data)
    assert batch._write_pbs[0]._pb.HasField("update_mask")


def test_a_ledger_merge_of_plain_fields_is_the_librarys(db: firestore.Client) -> None:
    data = {
        "tenant_id": "t-1",
        "strategy_id": None,
        "qty": 3.0,
        "filled_avg_price": 101.25,
        "recorded_at": NOW,
        "empty": {},
        "nested": {"when": VALUE_TIME, "flag": True, "server": SERVER_TIME},
    }
    _same(
        db,
        lambda b: lean_writes.merge(b, _ref(db), data),
        lambda b: b.set(_ref(db), data, merge=True),
    )


@pytest.mark.parametrize(
    "when",
    [
        datetime(2026, 12, 1, 14, 30, 5, 999999),  # naive: the library reads it as UTC
        datetime(2026, 12, 1, 9, 30, tzinfo=timezone(timedelta(hours=-5))),
        datetime(1969, 7, 20, 20, 17, 40, 1, tzinfo=UTC),
    ],
)
def test_times_are_the_librarys(db: firestore.Client, when: datetime) -> None:
    data = {"at": when}
    _same(db, lambda b: lean_writes.create(b, _ref(db), data), lambda b: b.create(_ref(db), data))


@pytest.mark.parametrize(
    ("method", "data"),
    [
        ("create", {"symbols": ["AAPL", "MSFT"]}),
        ("create", {"raw": b"\x00\x01"}),
        ("update", {"leases.`lease-1`.expires_at": NOW}),
        ("merge", {"updated_at": firestore.SERVER_TIMESTAMP}),
        ("merge", {"tags": firestore.ArrayUnion(["x"])}),
    ],
)
def test_what_the_encoder_does_not_take_goes_to_the_library(
    db: firestore.Client, method: str, data: dict[str, Any]
) -> None:
    library: dict[str, Callable[[firestore.WriteBatch], None]] = {
        "create": lambda b: b.create(_ref(db), data),
        "update": lambda b: b.update(_ref(db), data),
        "merge": lambda b: b.set(_ref(db), data, merge=True),
    }
    lean: dict[str, Callable[[firestore.WriteBatch], None]] = {
        "create": lambda b: lean_writes.create(b, _ref(db), data),
        "update": lambda b: lean_writes.update(b, _ref(db), data),
        "merge": lambda b: lean_writes.merge(b, _ref(db), data),
    }
    _same(db, lean[method], library[method])


_names = st.text(st.characters(codec="utf-8", exclude_characters="`.\\"), min_size=1, max_size=8)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.datetimes(timezones=st.just(UTC)),
)
_documents = st.dictionaries(
    _names,
    st.recursive(_scalars, lambda inner: st.dictionaries(_names, inner, max_size=3), max_leaves=8),
    max_size=6,
)


_GENERATED_DB = firestore.Client(project="demo-lean-writes", credentials=AnonymousCredentials())


@settings(derandomize=True, max_examples=200, deadline=None)
@given(data=_documents)
def test_any_document_of_plain_values_is_encoded_as_the_library_does(
    data: dict[str, Any],
) -> None:
    db, ref = _GENERATED_DB, _GENERATED_DB.collection("c").document("d")
    for lean, library in (
        (lean_writes.create, lambda b: b.create(ref, data)),
        (lean_writes.merge, lambda b: b.set(ref, data, merge=True)),
    ):
        ours, theirs = db.batch(), db.batch()
        lean(ours, ref, data)
        library(theirs)
        assert _bytes(ours) == _bytes(theirs)
