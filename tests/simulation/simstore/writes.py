"""`SimWriteBatch` and what one staged write does to a document.

A write is converted when it is staged (client-side errors raise there, as the library's encoding
does) and applied at commit to a working copy of the documents it touches: the first refusal
(`AlreadyExists`, `NotFound`, `FailedPrecondition`, `InvalidArgument`) fails the whole batch and
nothing lands. A write that leaves its document as it was keeps the document's update time (the
emulator does so; preconditions taken before still hold).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from google.api_core import exceptions as gexc
from google.cloud.firestore_v1 import _helpers, transforms

from tests.simulation.simstore.documents import SimDocumentReference, SimWriteResult
from tests.simulation.simstore.values import (
    MAX_DOCUMENT_BYTES,
    Path,
    Staging,
    document_size,
    field_path,
    incremented,
    lookup,
    merged,
    reserved,
    stored_time,
    with_field,
    without_field,
)

if TYPE_CHECKING:
    from tests.simulation.simstore.client import SimClient


@dataclass(frozen=True)
class StoredDocument:
    """A document as the store holds it; `data` is never changed in place."""

    data: dict[str, Any]
    create_time: datetime
    update_time: datetime
    size_bound: int
    """At least the document's size (`document_size`); measured exactly near the limit."""


@dataclass
class StagedWrite:
    """One write of a batch, converted."""

    kind: str  # create | set | merge | update | delete
    ref: SimDocumentReference
    fields: dict[str, Any] | list[tuple[Path, Any]] | None
    staging: Staging
    option: Any = None


class SimWriteBatch:
    """Writes committed together or not at all, at one commit time."""

    def __init__(self, client: SimClient) -> None:
        self._client = client
        self._writes: list[StagedWrite] = []
        self.commit_time: datetime | None = None
        self.write_results: list[SimWriteResult] | None = None

    def __len__(self) -> int:
        return len(self._writes)

    def __enter__(self) -> SimWriteBatch:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.commit()

    def create(self, reference: SimDocumentReference, document_data: dict[str, Any]) -> None:
        staging = Staging()
        if any(v is transforms.DELETE_FIELD for v in document_data.values()):
            raise ValueError("Cannot apply DELETE_FIELD in a create request.")
        fields = staging.map(document_data, (), allow_delete=False)
        self._stage(StagedWrite("create", reference, fields, staging))

    def set(
        self, reference: SimDocumentReference, document_data: dict[str, Any], merge: bool = False
    ) -> None:
        if merge not in (True, False):
            raise NotImplementedError("the simulated store merges whole maps only (merge=True)")
        staging = Staging()
        staging.merging = merge
        fields = staging.map(document_data, (), allow_delete=merge)
        self._stage(StagedWrite("merge" if merge else "set", reference, fields, staging))

    def update(
        self, reference: SimDocumentReference, field_updates: dict[str, Any], option: Any = None
    ) -> None:
        if isinstance(option, _helpers.ExistsOption):
            raise ValueError("you must not pass an explicit write option to update.")
        if not field_updates:
            raise ValueError("Cannot update with an empty document.")
        staging = Staging()
        updates: list[tuple[Path, Any]] = []
        keys = [field_path(key) for key in field_updates]
        _refuse_overlaps(keys)
        for path, value in zip(keys, field_updates.values(), strict=True):
            for name in path:
                staging.check_name(name)
                staging.size += 4 * len(name) + 1
            if value is transforms.DELETE_FIELD:
                staging.deletes.append(path)
            elif value is transforms.SERVER_TIMESTAMP or isinstance(value, transforms.Increment):
                staging.transforms.append((path, value))
            elif isinstance(value, dict):
                updates.append((path, staging.map(value, path, allow_delete=False)))
            else:
                updates.append((path, staging.value(value, path)))
        self._stage(StagedWrite("update", reference, updates, staging, option))

    def delete(self, reference: SimDocumentReference, option: Any = None) -> None:
        self._stage(StagedWrite("delete", reference, None, Staging(), option))

    def _stage(self, write: StagedWrite) -> None:
        if write.ref._client is not self._client:
            raise ValueError("Document reference belongs to another client")
        self._writes.append(write)

    def commit(self, retry: Any = None, timeout: Any = None) -> list[SimWriteResult]:
        """Apply every write or none; see the module docstring."""
        writes, self._writes = self._writes, []
        self.commit_time, self.write_results = self._client._commit(writes)
        return self.write_results


def _refuse_overlaps(paths: list[Path]) -> None:
    ordered = sorted(paths)
    for shorter, longer in itertools.pairwise(ordered):
        if longer[: len(shorter)] == shorter:
            raise ValueError(f"Field paths {shorter} and {longer} conflict")


def refuse_collapsed_writes(writes: list[StagedWrite]) -> None:
    """The emulator's refusals for one document written twice in a batch (it merges them)."""
    if len({write.ref.path for write in writes}) == len(writes):
        return
    written: set[str] = set()
    versions: dict[str, int] = {}
    for write in writes:
        path = write.ref.path
        if write.kind == "create" and path in written:
            raise gexc.InvalidArgument("Cannot update then insert an entity in the same request.")
        written.add(path)
        if isinstance(write.option, _helpers.LastUpdateOption):
            version = _version(write.option._last_update_time)
            if versions.setdefault(path, version) != version:
                raise gexc.InvalidArgument(
                    "Cannot collapse mutations with different version preconditions"
                )


def apply_write(
    write: StagedWrite, current: StoredDocument | None, commit_time: datetime
) -> tuple[StoredDocument | None, SimWriteResult]:
    """The document after `write`, and the write's result; raises what the server refuses."""
    _check_preconditions(write, current)
    if write.kind == "delete":
        return None, SimWriteResult(None, [])
    data = _written_fields(write, current)
    for deleted in write.staging.deletes:
        data = without_field(data, deleted)
    results = []
    for at, transform in write.staging.transforms:
        if transform is transforms.SERVER_TIMESTAMP:
            value: Any = stored_time(commit_time)
        else:
            value = incremented(lookup(data, at)[1], transform.value)
        data = with_field(data, at, value)
        results.append(_helpers.encode_value(value))  # the library hands out `Value` messages
    size_bound = _size_bound(write, current, data)
    if current is not None and _unchanged(write, current.data, data):
        return current, SimWriteResult(current.update_time, results)
    created = current.create_time if current is not None else commit_time
    document = StoredDocument(data, created, commit_time, size_bound)
    return document, SimWriteResult(commit_time, results)


def _size_bound(write: StagedWrite, current: StoredDocument | None, data: dict[str, Any]) -> int:
    """A bound of the new document's size; raises where its exact size is over the limit."""
    bound = 4 * len(write.ref.path) + 33 + write.staging.size + 16 * len(write.staging.transforms)
    if current is not None and write.kind not in ("create", "set"):
        bound += current.size_bound
    if bound > MAX_DOCUMENT_BYTES:
        bound = document_size(write.ref.path, data)
        if bound > MAX_DOCUMENT_BYTES:
            raise gexc.InvalidArgument(f"maximum entity size is {MAX_DOCUMENT_BYTES} bytes")
    return bound


def _written_fields(write: StagedWrite, current: StoredDocument | None) -> dict[str, Any]:
    if write.kind in ("create", "set"):
        assert isinstance(write.fields, dict)
        return write.fields
    base = current.data if current is not None else {}
    if write.kind == "merge":
        assert isinstance(write.fields, dict)
        return merged(base, write.fields)
    assert isinstance(write.fields, list)
    for at, value in write.fields:
        base = with_field(base, at, value)
    return base


def _check_preconditions(write: StagedWrite, current: StoredDocument | None) -> None:
    path = write.ref.path
    if write.staging.invalid is not None:
        raise write.staging.invalid
    for at in write.staging.deletes:
        if any(reserved(name) for name in at):
            raise gexc.InvalidArgument(f"Invalid reserved name in field path {'.'.join(at)}")
    option = write.option
    if isinstance(option, _helpers.LastUpdateOption) and (
        current is None or _as_time(option._last_update_time) != current.update_time
    ):
        stored = 0 if current is None else _version(current.update_time)
        required = _version(option._last_update_time)
        if stored != required:
            raise gexc.FailedPrecondition(
                f"the stored version ({stored}) does not match the required base version "
                f"({required})"
            )
    elif isinstance(option, _helpers.ExistsOption):
        if option._exists and current is None:
            raise gexc.NotFound(f"no entity to update: {path}")
        if not option._exists and current is not None:
            raise gexc.AlreadyExists(f"entity already exists: {path}")
    if write.kind == "create" and current is not None:
        raise gexc.AlreadyExists(f"entity already exists: {path}")
    if write.kind == "update" and current is None:
        raise gexc.NotFound(f"no entity to update: {path}")


def _as_time(when: Any) -> datetime:
    """A precondition's update time as the store keeps update times (UTC, microseconds)."""
    if not isinstance(when, datetime):
        when = when.ToDatetime()  # a protobuf Timestamp, naive UTC
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _version(when: Any) -> int:
    """An update time in microseconds since the epoch (the emulator's version number)."""
    moment = stored_time(_as_time(when))
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def _unchanged(write: StagedWrite, before: dict[str, Any], after: dict[str, Any]) -> bool:
    """Whether `write` left the document as it was (an update: only its paths can differ)."""
    if write.kind != "update":
        return identical(before, after)
    assert isinstance(write.fields, list)
    touched = [p for p, _ in write.fields] + write.staging.deletes
    touched += [p for p, _ in write.staging.transforms]
    for path in touched:
        (had, old), (has, new) = lookup(before, path), lookup(after, path)
        if had != has or not identical(old, new):
            return False
    return True


def identical(a: Any, b: Any) -> bool:
    """Whether two stored values are the same value of the same type (1 is not 1.0)."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(identical(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(identical(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and a != a:
        return bool(b != b)
    return bool(a == b)
