"""`SimQuery` and `SimAggregationQuery`: filters, order, cursors, limits, count and sum.

Semantics pinned by the contract suite against the emulator:
- a filter never matches a document lacking its field; `==`/`in` compare within a type (1 == 1.0,
  NaN == NaN); `!=`/`not-in` also skip null; `in` never matches null; ranges (<, <=, >, >=) match
  only values of the filter value's type, and never NaN;
- the order is the explicit `order_by`s, then inequality fields not ordered yet (by name), then the
  document path, each of the latter in the direction of the last explicit order; an ordered field
  must exist; values of different types order null < bool < NaN < numbers < timestamps < strings <
  bytes < arrays < maps;
- `count()` counts what the query returns (its limit included); `sum()` adds the numbers it finds
  (int while every addend is an int, else float; 0.0 where none), and an aggregation with a `sum`
  leaves out documents lacking the summed field, from every figure (the emulator does).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from google.api_core import exceptions as gexc
from google.cloud.firestore_v1.base_aggregation import AggregationResult
from google.cloud.firestore_v1.base_query import FieldFilter

from tests.simulation.simstore.documents import SimSnapshot
from tests.simulation.simstore.values import (
    INT64_MAX,
    INT64_MIN,
    Path,
    field_path,
    lookup,
    order_key,
    same_value,
    type_rank,
)

if TYPE_CHECKING:
    from tests.simulation.simstore.client import SimClient

ASCENDING, DESCENDING = "ASCENDING", "DESCENDING"
_RANGE = {"<", "<=", ">", ">="}
_INEQUALITY = _RANGE | {"!=", "not-in"}
_NAME: Path = ("__name__",)
_UNARY = {
    "IS_NULL": ("==", None),
    "IS_NAN": ("==", math.nan),
    "IS_NOT_NULL": ("!=", None),
    "IS_NOT_NAN": ("!=", math.nan),
}


@dataclass(frozen=True)
class _Filter:
    path: Path
    op: str
    value: Any

    def matches(self, data: dict[str, Any]) -> bool:
        found, value = lookup(data, self.path)
        if not found:
            return False
        op, wanted = self.op, self.value
        if op == "exists":
            return True
        if op == "==":
            return same_value(value, wanted)
        if op == "in":
            return value is not None and any(same_value(value, w) for w in wanted)
        if op == "!=":
            return value is not None and not same_value(value, wanted)
        if op == "not-in":
            return value is not None and not any(same_value(value, w) for w in wanted)
        if op == "array_contains":
            return isinstance(value, list) and any(same_value(v, wanted) for v in value)
        if op == "array_contains_any":
            return isinstance(value, list) and any(same_value(v, w) for v in value for w in wanted)
        return _in_range(op, value, wanted)


def _in_range(op: str, value: Any, wanted: Any) -> bool:
    if type_rank(value) != type_rank(wanted):
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    a, b = order_key(value), order_key(wanted)
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


@dataclass(frozen=True)
class _Cursor:
    values: tuple[Any, ...]
    inclusive: bool
    source: Any  # a snapshot (whose values follow the normalized order) or a dict of fields


class SimQuery:
    """An immutable query over one collection, or over every collection with an id (group)."""

    ASCENDING = ASCENDING
    DESCENDING = DESCENDING

    def __init__(
        self,
        client: SimClient,
        *,
        parent: tuple[str, ...] | None,
        collection_id: str,
        filters: tuple[_Filter, ...] = (),
        orders: tuple[tuple[Path, str], ...] = (),
        limit: int | None = None,
        cursor: _Cursor | None = None,
    ) -> None:
        self._client = client
        self.parent = parent
        self.collection_id = collection_id
        self._filters = filters
        self._orders = orders
        self._limit = limit
        self._cursor = cursor

    @property
    def scope(self) -> str:
        """The collection path, or `**/{id}` for a collection group."""
        if self.parent is None:
            return f"**/{self.collection_id}"
        return "/".join((*self.parent, self.collection_id))

    def _with(self, **changes: Any) -> SimQuery:
        fields = {
            "parent": self.parent,
            "collection_id": self.collection_id,
            "filters": self._filters,
            "orders": self._orders,
            "limit": self._limit,
            "cursor": self._cursor,
            **changes,
        }
        return SimQuery(self._client, **fields)

    def where(
        self,
        field_path_: str | None = None,
        op_string: str | None = None,
        value: Any = None,
        *,
        filter: FieldFilter | None = None,
    ) -> SimQuery:
        if filter is None:
            warnings.warn(
                "Detected filter using positional arguments. Prefer using the 'filter' keyword "
                "argument instead.",
                UserWarning,
                stacklevel=2,
            )
            filter = FieldFilter(field_path_, op_string, value)
        if not isinstance(filter, FieldFilter):
            raise NotImplementedError("the simulated store filters with FieldFilter only")
        op, value = filter.op_string, filter.value
        if not isinstance(op, str):  # the library turns == / != of None and NaN into unary ops
            op, value = _UNARY[op.name]
        if op in ("in", "not-in", "array_contains_any") and not isinstance(value, list):
            raise ValueError(f"A '{op}' filter needs a list value")
        new = _Filter(field_path(filter.field_path), op, value)
        if new.path == _NAME:
            raise NotImplementedError("the simulated store does not filter on document ids")
        return self._with(filters=(*self._filters, new))

    def order_by(self, field_path_: str, direction: str = ASCENDING) -> SimQuery:
        if direction not in (ASCENDING, DESCENDING):
            raise ValueError(f"Invalid direction {direction!r}")
        return self._with(orders=(*self._orders, (field_path(field_path_), direction)))

    def limit(self, count: int) -> SimQuery:
        return self._with(limit=count)

    def start_after(self, document_fields_or_snapshot: Any) -> SimQuery:
        return self._with(cursor=_Cursor((), False, document_fields_or_snapshot))

    def start_at(self, document_fields_or_snapshot: Any) -> SimQuery:
        return self._with(cursor=_Cursor((), True, document_fields_or_snapshot))

    def count(self, alias: str | None = None) -> SimAggregationQuery:
        return SimAggregationQuery(self).count(alias=alias)

    def sum(self, field_ref: str, alias: str | None = None) -> SimAggregationQuery:
        return SimAggregationQuery(self).sum(field_ref, alias=alias)

    # -- running ---------------------------------------------------------------------------

    def matches(self, data: dict[str, Any]) -> bool:
        """Whether a document passes every filter and has every ordered field."""
        if not all(f.matches(data) for f in self._filters):
            return False
        return all(path == _NAME or lookup(data, path)[0] for path, _ in self._orders)

    def _normalized_orders(self) -> list[tuple[Path, str]]:
        orders = list(self._orders)
        direction = orders[-1][1] if orders else ASCENDING
        ordered = {path for path, _ in orders}
        unordered = sorted({f.path for f in self._filters if f.op in _INEQUALITY} - ordered)
        orders += [(path, direction) for path in unordered]
        return orders if _NAME in ordered else [*orders, (_NAME, direction)]

    def _results(self, kind: str) -> tuple[list[SimSnapshot], datetime]:
        orders = self._normalized_orders()
        if orders == [(_NAME, DESCENDING)] and not self._filters:
            self._client._call(kind, (self.scope,))
            raise gexc.FailedPrecondition("Firestore does not support descending key scans")
        snapshots, read_time = self._client._run_query(self, kind)
        for path, direction in reversed(orders):  # stable sorts, least significant first
            snapshots.sort(key=lambda s, p=path: _sort_key(s, p), reverse=direction == DESCENDING)
        if self._cursor is not None:
            start = self._cursor_values(orders)
            snapshots = [s for s in snapshots if self._past_cursor(s, orders, start)]
        if self._limit is not None:
            snapshots = snapshots[: self._limit]
        return snapshots, read_time

    def _cursor_values(self, orders: list[tuple[Path, str]]) -> list[Any]:
        source = self._cursor.source if self._cursor is not None else None
        if isinstance(source, SimSnapshot):
            return [_sort_value(source, path) for path, _ in orders]
        if isinstance(source, dict):
            return [lookup(source, path)[1] for path, _ in self._orders if lookup(source, path)[0]]
        raise NotImplementedError("the simulated store takes snapshot or dict cursors")

    def _past_cursor(
        self, snapshot: SimSnapshot, orders: list[tuple[Path, str]], start: list[Any]
    ) -> bool:
        assert self._cursor is not None
        for (path, direction), value in zip(orders, start, strict=False):
            mine = _sort_key(snapshot, path)
            theirs = value if path == _NAME else order_key(value)
            if mine != theirs:
                return (mine > theirs) == (direction == ASCENDING)
        return self._cursor.inclusive

    def stream(
        self, transaction: Any = None, retry: Any = None, timeout: Any = None
    ) -> Iterator[SimSnapshot]:
        """The matching snapshots, read when first iterated (as the library's stream)."""
        if transaction is not None:
            raise NotImplementedError("the simulated store runs queries outside transactions")
        yield from self._results("query")[0]

    def get(
        self, transaction: Any = None, retry: Any = None, timeout: Any = None
    ) -> list[SimSnapshot]:
        return list(self.stream(transaction=transaction))


def _sort_value(snapshot: SimSnapshot, path: Path) -> Any:
    if path == _NAME:
        return tuple(snapshot.reference.path.split("/"))
    return lookup(snapshot._data or {}, path)[1]


def _sort_key(snapshot: SimSnapshot, path: Path) -> Any:
    if path == _NAME:
        return tuple(snapshot.reference.path.split("/"))
    return order_key(lookup(snapshot._data or {}, path)[1])


@dataclass(frozen=True)
class _Aggregation:
    kind: str  # count | sum
    alias: str | None
    path: Path | None = None


class SimAggregationQuery:
    """`count()` and `sum()` over a query's results; `get()` answers `[[AggregationResult]]`."""

    def __init__(self, query: SimQuery, aggregations: tuple[_Aggregation, ...] = ()) -> None:
        self._query = query
        self._aggregations = aggregations

    def count(self, alias: str | None = None) -> SimAggregationQuery:
        return SimAggregationQuery(self._query, (*self._aggregations, _Aggregation("count", alias)))

    def sum(self, field_ref: str, alias: str | None = None) -> SimAggregationQuery:
        new = _Aggregation("sum", alias, field_path(field_ref))
        return SimAggregationQuery(self._query, (*self._aggregations, new))

    def get(
        self, transaction: Any = None, retry: Any = None, timeout: Any = None
    ) -> list[list[AggregationResult]]:
        if transaction is not None:
            raise NotImplementedError("the simulated store aggregates outside transactions")
        summed = [a.path for a in self._aggregations if a.path is not None]
        query = self._query
        if summed:  # the emulator counts only documents holding every summed field
            query = _requiring(query, summed)
        snapshots, read_time = query._results("aggregate")
        results = []
        for index, aggregation in enumerate(self._aggregations, start=1):
            alias = aggregation.alias or f"field_{index}"
            if aggregation.kind == "count":
                value: Any = len(snapshots) or 0.0  # the emulator counts nothing as 0.0
            else:
                assert aggregation.path is not None
                value = _sum(lookup(s._data or {}, aggregation.path)[1] for s in snapshots)
            results.append(AggregationResult(alias, value, read_time))
        return [results]

    def stream(self, **kwargs: Any) -> Iterator[list[AggregationResult]]:
        yield from self.get(**kwargs)


def _requiring(query: SimQuery, paths: list[Path]) -> SimQuery:
    """`query` keeping only documents that hold every field of `paths`."""
    existence = tuple(_Filter(path, "exists", None) for path in paths)
    return query._with(filters=(*query._filters, *existence))


def _sum(values: Iterator[Any]) -> int | float:
    total: int | float = 0
    integral, found = True, False
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        found = True
        integral = integral and isinstance(value, int)
        total += value
    if not found:
        return 0.0
    if integral and INT64_MIN <= total <= INT64_MAX:
        return total
    return float(total)
