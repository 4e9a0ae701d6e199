"""`SimClient`: the subset of `google.cloud.firestore.Client` our adapters use, in memory.

Deterministic: no wall clock, no threads, no randomness but its own seeded generator. Time comes
from the clock the simulation owns; each commit gets a server time of its own, strictly after the
previous one (the clock's reading, or a microsecond after the last commit where the clock stood
still). Before every read, commit and query the client calls the simulation's fault hook, which
may raise an error before the call takes effect or after a commit has landed (see `faults`).
Calls run one at a time: a scheduler interleaves invocations at the hook, never inside a call.
"""

from __future__ import annotations

import random
import string
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud.firestore_v1.base_client import BaseClient
from proto.datetime_helpers import DatetimeWithNanoseconds

from tests.simulation.simstore.documents import (
    SimCollectionReference,
    SimDocumentReference,
    SimSnapshot,
    SimWriteResult,
    split_path,
)
from tests.simulation.simstore.faults import FaultHook, StoreCall
from tests.simulation.simstore.queries import SimQuery
from tests.simulation.simstore.values import copy_value, reserved, stored_time
from tests.simulation.simstore.writes import (
    SimWriteBatch,
    StagedWrite,
    StoredDocument,
    apply_write,
    refuse_collapsed_writes,
)

MAX_ID_BYTES = 1500
_ID_ALPHABET = string.ascii_letters + string.digits
_TICK = timedelta(microseconds=1)


class SimClient:
    """An in-memory Firestore with the emulator's semantics for what our adapters call."""

    def __init__(
        self,
        *,
        clock: Callable[[], datetime],
        faults: FaultHook | None = None,
        seed: int = 0,
        project: str = "demo-simulation",
    ) -> None:
        self.project = project
        self.faults = faults
        """Called before each store call; may return a `Fault` (see `faults`)."""
        self.calls: Counter[str] = Counter()
        """Store calls made, by kind."""
        self.commits_landed = 0
        """Commits applied so far (a fault before a commit does not count; one after does)."""
        self._clock = clock
        self._random = random.Random(seed)
        self._documents: dict[str, StoredDocument] = {}
        # collection path -> {document path: None}, and collection id -> its collection paths
        self._collections: dict[str, dict[str, None]] = {}
        self._collection_ids: dict[str, dict[str, None]] = {}
        self._last_commit: datetime | None = None
        self._valid_paths: set[str] = set()

    write_option = staticmethod(BaseClient.write_option)

    # -- addresses ------------------------------------------------------------------------

    def collection(self, *collection_path: str) -> SimCollectionReference:
        return SimCollectionReference(self, split_path(collection_path))

    def document(self, *document_path: str) -> SimDocumentReference:
        return SimDocumentReference(self, split_path(document_path))

    def collection_group(self, collection_id: str) -> SimQuery:
        if "/" in collection_id:
            raise ValueError(
                f"Invalid collection_id {collection_id}. Collection IDs must not contain '/'."
            )
        return SimQuery(self, parent=None, collection_id=collection_id)

    def batch(self) -> SimWriteBatch:
        return SimWriteBatch(self)

    def transaction(self, **_: Any) -> Any:
        raise NotImplementedError(
            "the simulated store has no transactions: our adapters write with preconditions"
        )

    def close(self) -> None:
        """Nothing to release."""

    # -- calls ----------------------------------------------------------------------------

    def get_all(
        self,
        references: Iterable[SimDocumentReference],
        field_paths: Any = None,
        transaction: Any = None,
        retry: Any = None,
        timeout: Any = None,
    ) -> Iterator[SimSnapshot]:
        """Snapshots of the distinct `references`, read when first iterated (as the library)."""
        if field_paths is not None or transaction is not None:
            raise NotImplementedError("the simulated store reads whole documents, untransacted")
        refs = list(dict.fromkeys(references))
        return self._read_many(refs)

    def _read_many(self, refs: list[SimDocumentReference]) -> Iterator[SimSnapshot]:
        self._call("get_all", tuple(ref.path for ref in refs))
        for ref in refs:
            self._check_path(ref.path)
        read_time = self._read_time()
        snapshots = [self._snapshot(ref, read_time) for ref in refs]
        yield from snapshots

    def _read_one(self, ref: SimDocumentReference) -> SimSnapshot:
        self._call("get", (ref.path,))
        self._check_path(ref.path)
        return self._snapshot(ref, self._read_time())

    def _snapshot(self, ref: SimDocumentReference, read_time: datetime) -> SimSnapshot:
        return _snapshot_of(ref, self._documents.get(ref.path), read_time)

    def _run_query(self, query: SimQuery, kind: str) -> tuple[list[SimSnapshot], datetime]:
        """The documents `query` selects (the caller orders and cuts them); one store call."""
        self._call(kind, (query.scope,))
        read_time = self._read_time()
        if query.parent is None:
            collections = list(self._collection_ids.get(query.collection_id, ()))
        else:
            collections = ["/".join((*query.parent, query.collection_id))]
        return [
            _snapshot_of(SimDocumentReference(self, tuple(path.split("/"))), stored, read_time)
            for collection in collections
            for path in self._collections.get(collection, ())
            for stored in [self._documents[path]]
            if query.matches(stored.data)
        ], read_time

    def _commit(self, writes: list[StagedWrite]) -> tuple[datetime, list[SimWriteResult]]:
        """Apply `writes` atomically at a new commit time (see `writes`)."""
        fault = self._call("commit", tuple(w.ref.path for w in writes), apply_first=True)
        for write in writes:
            self._check_path(write.ref.path, writing=True)
        refuse_collapsed_writes(writes)
        commit_time = self._commit_time()
        working: dict[str, StoredDocument | None] = {}
        results = []
        for write in writes:
            path = write.ref.path
            current = working[path] if path in working else self._documents.get(path)
            working[path], result = apply_write(write, current, commit_time)
            results.append(result)
        for path, document in working.items():
            self._install(path, document)
        self._last_commit = commit_time
        self.commits_landed += 1
        if fault is not None:
            raise fault
        return commit_time, results

    def _install(self, path: str, document: StoredDocument | None) -> None:
        collection, _, _ = path.rpartition("/")
        if document is None:
            if self._documents.pop(path, None) is not None:
                del self._collections[collection][path]
            return
        if path not in self._documents:
            members = self._collections.get(collection)
            if members is None:
                members = self._collections[collection] = {}
                collection_id = collection.rpartition("/")[2]
                self._collection_ids.setdefault(collection_id, {})[collection] = None
            members[path] = None
        self._documents[path] = document

    def _call(
        self, kind: str, paths: tuple[str, ...], *, apply_first: bool = False
    ) -> BaseException | None:
        """Count the call and ask the hook; raise its error now, or return it to raise later."""
        self.calls[kind] += 1
        if self.faults is None:
            return None
        fault = self.faults(StoreCall(kind, paths))
        if fault is None:
            return None
        if fault.after_commit and apply_first:
            return fault.error
        raise fault.error

    # -- time, ids, validity --------------------------------------------------------------

    def _commit_time(self) -> datetime:
        now = _server_time(self._clock())
        if self._last_commit is not None and now <= self._last_commit:
            now = _server_time(self._last_commit + _TICK)
        return now

    def _read_time(self) -> datetime:
        now = _server_time(self._clock())
        return now if self._last_commit is None or now > self._last_commit else self._last_commit

    def _new_document_id(self) -> str:
        return "".join(self._random.choice(_ID_ALPHABET) for _ in range(20))

    def _check_path(self, path: str, *, writing: bool = False) -> None:
        """Refuse, as the server does, ids that are reserved, empty, `.`/`..` (or too long to
        write: a read of one answers "missing")."""
        if path in self._valid_paths:
            return
        segments = path.split("/")
        for index, segment in enumerate(segments):
            kind = "Collection id" if index % 2 == 0 else "Resource id"
            if reserved(segment):
                raise gexc.InvalidArgument(f'{kind} "{segment}" is invalid because it is reserved.')
            if segment in ("", ".", ".."):
                raise gexc.InvalidArgument(f'Document name "{path}" contains an invalid id.')
            if writing and len(segment.encode("utf-8")) > MAX_ID_BYTES:
                raise gexc.InvalidArgument("The key path element name is longer than 1500 bytes.")
        if writing or len(path) <= MAX_ID_BYTES:
            self._valid_paths.add(path)

    # -- for the simulation's invariants: no hook, no call counted -------------------------

    def peek(self, path: str) -> dict[str, Any] | None:
        """A copy of the document at `path` now, None where absent."""
        stored = self._documents.get(path)
        return None if stored is None else copy_value(stored.data)

    def view(self, collection_id: str) -> dict[str, dict[str, Any]]:
        """Every document of collections named `collection_id`, by path, NOT copied: for checks
        that only read, after every step of a simulation (where copying costs most of a step)."""
        return {
            path: stored.data
            for path, stored in self._documents.items()
            if path.split("/")[-2] == collection_id
        }

    def dump(self, collection_id: str | None = None) -> dict[str, dict[str, Any]]:
        """Every document (of collections named `collection_id`), by path, copied."""
        return {
            path: data
            for path in sorted(self._documents)
            if collection_id is None or path.split("/")[-2] == collection_id
            for data in [self.peek(path)]
            if data is not None
        }


def _snapshot_of(
    ref: SimDocumentReference, stored: StoredDocument | None, read_time: datetime
) -> SimSnapshot:
    if stored is None:
        return SimSnapshot(ref, None, read_time=read_time, create_time=None, update_time=None)
    return SimSnapshot(
        ref,
        stored.data,
        read_time=read_time,
        create_time=stored.create_time,
        update_time=stored.update_time,
    )


def _server_time(moment: datetime) -> datetime:
    """A server timestamp: aware UTC, microseconds, as the library returns update times."""
    if moment.tzinfo is None:
        raise ValueError("the simulation's clock must be aware (UTC)")
    return stored_time(moment, DatetimeWithNanoseconds)
