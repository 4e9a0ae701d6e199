"""The hot path's writes, encoded straight to Firestore's protobuf `Write` messages.

Why: the client library encodes every field through proto-plus wrappers and field-path
objects; measured on the engine's common path, a reservation's `create` cost ~570 µs of client
CPU to encode, this encoding ~100 µs, and the intents of one instance share one interpreter
(the GIL), so encoding was the largest share of client CPU per intent (`bench/cpu_profile.py`).

What: `create`, `update` and `merge` add to a `WriteBatch` exactly the `Write` the library's
own `create`, `update` (with a last-update-time precondition, or "exists") and
`set(..., merge=True)` would add — `tests/unit/test_lean_writes.py` compares the two, message
for message, for every shape the adapters write. They accept what our documents hold: None,
bool, int, float, str, datetime and maps of those (and, in `merge`, `Increment` and
`DELETE_FIELD`); anything else (a list, bytes, a key the library would read as a path) is handed
to the library's own method, so a value is never encoded differently, only faster. A library
upgrade that encodes otherwise fails those tests before it can reach a deployment.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from google.api_core.datetime_helpers import DatetimeWithNanoseconds
from google.cloud import firestore
from google.cloud.firestore_v1 import _helpers, transforms
from google.cloud.firestore_v1.field_path import FieldPath
from google.cloud.firestore_v1.types import common, document, write
from google.protobuf import struct_pb2, timestamp_pb2
from proto import datetime_helpers as proto_datetime_helpers  # type: ignore[import-untyped]

_Value = document.Value.pb()
_MapValue = document.MapValue.pb()
_Document = document.Document.pb()
_Write = write.Write.pb()
_FieldTransform = write.DocumentTransform.FieldTransform.pb()
_Precondition = common.Precondition.pb()
_DocumentMask = common.DocumentMask.pb()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class _Unsupported(Exception):
    """A value or key this encoder leaves to the library."""


def create(
    batch: firestore.WriteBatch, ref: firestore.DocumentReference, data: Mapping[str, Any]
) -> None:
    """`batch.create(ref, data)`: the document must not exist."""
    try:
        fields = _fields(_top_level(batch, data))
    except _Unsupported:
        batch.create(ref, dict(data))
        return
    pb = _Write(
        update=_Document(name=ref._document_path, fields=fields),
        current_document=_Precondition(exists=False),
    )
    _add(batch, pb)


def update(
    batch: firestore.WriteBatch,
    ref: firestore.DocumentReference,
    data: Mapping[str, Any],
    *,
    option: Any = None,
) -> None:
    """`batch.update(ref, data, option=option)` of top-level fields: held to the last update
    time of `option` (`Client.write_option(last_update_time=...)`), else to existence."""
    try:
        fields = _fields(_top_level(batch, data))
        precondition = _precondition(option)
    except _Unsupported:
        batch.update(ref, dict(data), option=option)
        return
    pb = _Write(
        update=_Document(name=ref._document_path, fields=fields),
        update_mask=_DocumentMask(field_paths=sorted(data)),
        current_document=precondition,
    )
    _add(batch, pb)


def merge(
    batch: firestore.WriteBatch, ref: firestore.DocumentReference, data: Mapping[str, Any]
) -> None:
    """`batch.set(ref, data, merge=True)`: every leaf given is written, the rest kept."""
    try:
        leaves: list[tuple[tuple[str, ...], Any]] = []
        _walk(_top_level(batch, data), (), leaves)
        pb = _merge_write(ref._document_path, leaves)
    except _Unsupported:
        batch.set(ref, dict(data), merge=True)
        return
    _add(batch, pb)


def _top_level(batch: Any, data: Mapping[str, Any]) -> Mapping[str, Any]:
    """`data`, where this encoder takes it: a real client's batch (the simulation's store has
    its own, which gets the library's calls), and top-level names the library reads as names."""
    if not isinstance(batch, firestore.WriteBatch):
        raise _Unsupported
    if any(not _plain_key(key) for key in data):
        raise _Unsupported
    return data


def _merge_write(name: str, leaves: list[tuple[tuple[str, ...], Any]]) -> Any:
    doc = _Document(name=name)
    mask: list[tuple[str, ...]] = []
    increments: list[tuple[tuple[str, ...], Any]] = []
    for path, value in leaves:
        if value is transforms.DELETE_FIELD:
            mask.append(path)
        elif isinstance(value, transforms.Increment):
            increments.append((path, _value(value.value)))
        elif isinstance(
            value, transforms.Sentinel | transforms._ValueList | transforms._NumericValue
        ):
            raise _Unsupported
        else:
            _put(doc.fields, path, _value(value))
            mask.append(path)
    pb = _Write(
        update=doc,
        update_mask=_DocumentMask(field_paths=[_render(path) for path in sorted(mask)]),
    )
    for path, value in sorted(increments, key=lambda item: item[0]):
        pb.update_transforms.append(_FieldTransform(field_path=_render(path), increment=value))
    return pb


def _walk(
    data: Mapping[str, Any], prefix: tuple[str, ...], leaves: list[tuple[tuple[str, ...], Any]]
) -> None:
    """Every leaf of `data` (a non-empty map is walked; an empty one is a leaf) with its path."""
    for key, value in data.items():
        if not isinstance(key, str) or not key:
            raise _Unsupported
        path = (*prefix, key)
        if isinstance(value, dict) and value:
            _walk(value, path, leaves)
        else:
            leaves.append((path, value))


def _put(fields: Any, path: tuple[str, ...], value: Any) -> None:
    """Set `value` at `path` inside a protobuf map of fields, creating the maps on the way."""
    for key in path[:-1]:
        fields = fields[key].map_value.fields
    fields[path[-1]].CopyFrom(value)


@functools.lru_cache(maxsize=4096)
def _render(path: tuple[str, ...]) -> str:
    """A field path as the library writes it (names quoted where they are not simple)."""
    return str(FieldPath(*path).to_api_repr())


def _plain_key(key: object) -> bool:
    """A top-level field name `update` reads as itself, not as a path."""
    return isinstance(key, str) and bool(key) and _render((key,)) == key


def _fields(data: Mapping[str, Any]) -> dict[str, Any]:
    """A map's protobuf fields; its keys are names, never paths."""
    fields = {}
    for key, value in data.items():
        if not isinstance(key, str) or not key:
            raise _Unsupported
        fields[key] = _value(value)
    return fields


def _value(value: Any) -> Any:
    """One field's protobuf `Value`, as `_helpers.encode_value` makes it."""
    if value is None:
        return _Value(null_value=struct_pb2.NULL_VALUE)
    if isinstance(value, bool):
        return _Value(boolean_value=value)
    if isinstance(value, int):
        return _Value(integer_value=value)
    if isinstance(value, float):
        return _Value(double_value=value)
    if isinstance(value, datetime):
        return _Value(timestamp_value=_timestamp(value))
    if isinstance(value, str):
        return _Value(string_value=value)
    if isinstance(value, dict):
        return _Value(map_value=_MapValue(fields=_fields(value)))
    raise _Unsupported


def _timestamp(value: datetime) -> Any:
    """The Timestamp the library writes: nanoseconds kept where the value has them."""
    if isinstance(value, DatetimeWithNanoseconds):
        return value.timestamp_pb()  # type: ignore[no-untyped-call]
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    delta = aware - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    seconds, micro = divmod(micros, 1_000_000)
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=micro * 1_000)


def _precondition(option: Any) -> Any:
    """The precondition `option` sets, as its `modify_write` would (only "last update time")."""
    if option is None:
        return _Precondition(exists=True)
    if not isinstance(option, _helpers.LastUpdateOption):
        raise _Unsupported
    return _Precondition(update_time=_precondition_time(option._last_update_time))


def _precondition_time(value: datetime) -> Any:
    """The Timestamp the library's `LastUpdateOption` sends (proto-plus's rule: nanoseconds only
    from proto's own nanosecond datetime, which is what snapshots and commits answer)."""
    if isinstance(value, proto_datetime_helpers.DatetimeWithNanoseconds):
        return value.timestamp_pb()
    return timestamp_pb2.Timestamp(seconds=int(value.timestamp()), nanos=value.microsecond * 1000)


def _add(batch: firestore.WriteBatch, pb: Any) -> None:
    # The batch's own entry for write messages (`BaseBatch._add_write_pbs`); `commit` sends them.
    batch._add_write_pbs([write.Write.wrap(pb)])
