"""References, snapshots and write results of the simulated store.

`SimSnapshot` is a `google.cloud.firestore.DocumentSnapshot` (adapters check `isinstance`), built
without the library's deep copy of the data: stored maps are never changed in place, so a snapshot
shares them and copies only what `to_dict`/`get` hand out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from google.cloud import firestore
from google.cloud.firestore_v1 import field_path as field_path_module

from tests.simulation.simstore.values import copy_value

if TYPE_CHECKING:
    from tests.simulation.simstore.client import SimClient
    from tests.simulation.simstore.queries import SimAggregationQuery, SimQuery
    from tests.simulation.simstore.writes import SimWriteBatch


def split_path(parts: tuple[str, ...]) -> tuple[str, ...]:
    """Path segments of `parts`, each of which may hold several joined by `/`."""
    return tuple(segment for part in parts for segment in part.split("/"))


class SimDocumentReference:
    """A document's address; reads and writes go through its client."""

    def __init__(self, client: SimClient, segments: tuple[str, ...]) -> None:
        if len(segments) % 2:
            raise ValueError("A document must have an even number of path elements")
        self._client = client
        self._segments = segments
        self.path = "/".join(segments)
        self.id = segments[-1]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SimDocumentReference):
            return NotImplemented
        return self._client is other._client and self.path == other.path

    def __hash__(self) -> int:
        return hash(self.path)

    def __repr__(self) -> str:
        return f"SimDocumentReference({self.path!r})"

    @property
    def parent(self) -> SimCollectionReference:
        return SimCollectionReference(self._client, self._segments[:-1])

    def collection(self, collection_id: str) -> SimCollectionReference:
        return SimCollectionReference(self._client, (*self._segments, *collection_id.split("/")))

    def get(
        self,
        field_paths: Any = None,
        transaction: Any = None,
        retry: Any = None,
        timeout: Any = None,
    ) -> SimSnapshot:
        """The document as the store holds it now."""
        _refuse_unsupported(field_paths=field_paths, transaction=transaction)
        return self._client._read_one(self)

    def create(
        self, document_data: dict[str, Any], retry: Any = None, timeout: Any = None
    ) -> SimWriteResult:
        return self._commit_one(lambda batch: batch.create(self, document_data))

    def set(
        self,
        document_data: dict[str, Any],
        merge: bool = False,
        retry: Any = None,
        timeout: Any = None,
    ) -> SimWriteResult:
        return self._commit_one(lambda batch: batch.set(self, document_data, merge=merge))

    def update(
        self,
        field_updates: dict[str, Any],
        option: Any = None,
        retry: Any = None,
        timeout: Any = None,
    ) -> SimWriteResult:
        return self._commit_one(lambda batch: batch.update(self, field_updates, option=option))

    def _commit_one(self, stage: Callable[[SimWriteBatch], None]) -> SimWriteResult:
        """A single write is a batch of one, as the library sends it."""
        batch = self._client.batch()
        stage(batch)
        return batch.commit()[0]

    def delete(self, option: Any = None, retry: Any = None, timeout: Any = None) -> datetime:
        batch = self._client.batch()
        batch.delete(self, option=option)
        batch.commit()
        assert batch.commit_time is not None
        return batch.commit_time


class SimCollectionReference:
    """A collection's address; also the query over its documents."""

    def __init__(self, client: SimClient, segments: tuple[str, ...]) -> None:
        if not len(segments) % 2:
            raise ValueError("A collection must have an odd number of path elements")
        self._client = client
        self._segments = segments
        self.id = segments[-1]
        self.path = "/".join(segments)

    @property
    def parent(self) -> SimDocumentReference | None:
        return (
            SimDocumentReference(self._client, self._segments[:-1]) if self._segments[1:] else None
        )

    def document(self, document_id: str | None = None) -> SimDocumentReference:
        """The document `document_id`, or a new id (deterministic: from the client's seed)."""
        if document_id is None:
            document_id = self._client._new_document_id()
        return SimDocumentReference(self._client, (*self._segments, *document_id.split("/")))

    def _query(self) -> SimQuery:
        from tests.simulation.simstore.queries import SimQuery

        return SimQuery(self._client, parent=self._segments[:-1], collection_id=self.id)

    def where(self, *args: Any, **kwargs: Any) -> SimQuery:
        return self._query().where(*args, **kwargs)

    def order_by(self, field_path: str, direction: str = "ASCENDING") -> SimQuery:
        return self._query().order_by(field_path, direction=direction)

    def limit(self, count: int) -> SimQuery:
        return self._query().limit(count)

    def start_after(self, cursor: Any) -> SimQuery:
        return self._query().start_after(cursor)

    def start_at(self, cursor: Any) -> SimQuery:
        return self._query().start_at(cursor)

    def stream(
        self, transaction: Any = None, retry: Any = None, timeout: Any = None
    ) -> Iterator[SimSnapshot]:
        return self._query().stream(transaction=transaction)

    def get(
        self, transaction: Any = None, retry: Any = None, timeout: Any = None
    ) -> list[SimSnapshot]:
        return self._query().get(transaction=transaction)

    def count(self, alias: str | None = None) -> SimAggregationQuery:
        return self._query().count(alias=alias)

    def sum(self, field_ref: str, alias: str | None = None) -> SimAggregationQuery:
        return self._query().sum(field_ref, alias=alias)


class SimSnapshot(firestore.DocumentSnapshot):  # type: ignore[type-arg]
    """A document as read: `exists`, `to_dict()`, `get()`, `reference`, `id` and the times."""

    def __init__(  # the base class deep-copies `data`; stored maps are immutable (see module)
        self,
        reference: SimDocumentReference,
        data: dict[str, Any] | None,
        *,
        read_time: datetime,
        create_time: datetime | None,
        update_time: datetime | None,
    ) -> None:
        self._reference = reference  # type: ignore[assignment]
        self._data = data  # type: ignore[assignment]
        self._exists = data is not None
        self.read_time = read_time
        self.create_time = create_time
        self.update_time = update_time

    def to_dict(self) -> dict[str, Any] | None:
        return None if self._data is None else copy_value(self._data)

    def get(self, field_path: str) -> Any:
        if self._data is None:
            return None
        return copy_value(field_path_module.get_nested_value(field_path, self._data))


class SimWriteResult:
    """One write's result: the document's update time after the commit (None for a delete)."""

    def __init__(self, update_time: datetime | None, transform_results: list[Any]) -> None:
        self.update_time = update_time
        self.transform_results = transform_results

    def __repr__(self) -> str:
        return f"SimWriteResult(update_time={self.update_time!r})"


def _refuse_unsupported(**options: Any) -> None:
    """Options our adapters never pass: fail loudly rather than answer something else."""
    used = [name for name, value in options.items() if value is not None]
    if used:
        raise NotImplementedError(f"the simulated store does not support {', '.join(used)}")
