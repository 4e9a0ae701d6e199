"""Stored values as the Firestore emulator types them, their ordering, and field paths.

What a write holds is converted once, when it is staged (as the client library encodes it then):
`bool`, `int` (int64), `float`, `str`, `bytes`, `None`, maps with string keys, arrays (lists,
tuples, sets) and timestamps, which come back as aware UTC `DatetimeWithNanoseconds` with
microsecond precision (a naive datetime is taken as UTC). What the client refuses raises at once
(`ValueError`/`TypeError`); what the server refuses (reserved names, nesting, sizes) is kept as an
`InvalidArgument` the commit raises, as the emulator does.
"""

from __future__ import annotations

import functools
import math
import re
from datetime import UTC, datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.api_core.datetime_helpers import DatetimeWithNanoseconds
from google.cloud.firestore_v1 import transforms
from google.cloud.firestore_v1.field_path import parse_field_path

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_VALUE_BYTES = 1_048_487
"""The emulator's bound on one string or bytes value."""
MAX_DOCUMENT_BYTES = 1_048_576
MAX_DEPTH = 20
"""Maps (or arrays) nested deeper than this are refused."""
_RESERVED = re.compile(r"^__.*__$")

Path = tuple[str, ...]


_SIMPLE_PATH = re.compile(r"^[_a-zA-Z][_a-zA-Z0-9]*(\.[_a-zA-Z][_a-zA-Z0-9]*)*$")


@functools.lru_cache(maxsize=4096)
def field_path(api_repr: str) -> Path:
    """`a.b.`c-d`` as its names; raises `ValueError` for a malformed path."""
    if _SIMPLE_PATH.match(api_repr):
        return tuple(api_repr.split("."))
    return tuple(parse_field_path(api_repr))


@functools.lru_cache(maxsize=65536)
def reserved(name: str) -> bool:
    """Whether `name` is reserved (`__x__`) as a field name or a resource id."""
    return _RESERVED.match(name) is not None


_SCALARS = frozenset({bool, float, type(None)})
_SENTINELS = (transforms.Sentinel, transforms._NumericValue, transforms._ValueList)
_TIMES: dict[tuple[datetime, type[datetime]], datetime] = {}
"""Converted timestamps: a simulation writes the same few clock readings many times."""
_MAX_TIMES = 4096
_GOOD_NAMES: set[str] = set()
"""Field names already checked and not reserved."""
_MAX_GOOD_NAMES = 65536
_SHORT = 1024


def stored_time(value: datetime, kind: type[datetime] = DatetimeWithNanoseconds) -> datetime:
    """`value` as the emulator returns a timestamp: aware UTC, microseconds, of class `kind`."""
    if type(value) is kind and value.tzinfo is UTC:
        return value
    key = (value, kind)
    known = _TIMES.get(key)
    if known is not None:
        return known
    if len(_TIMES) >= _MAX_TIMES:
        _TIMES.clear()
    _TIMES[key] = converted = _convert_time(value, kind)
    return converted


def _convert_time(value: datetime, kind: type[datetime]) -> datetime:
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return kind(
        value.year,
        value.month,
        value.day,
        value.hour,
        value.minute,
        value.second,
        value.microsecond,
        tzinfo=UTC,
    )


class Staging:
    """Converts one write's values; collects its transforms and the server's objections."""

    def __init__(self) -> None:
        self.transforms: list[tuple[Path, Any]] = []
        self.deletes: list[Path] = []
        self.invalid: gexc.InvalidArgument | None = None
        self.merging = False
        self.size = 0
        """An upper bound of the bytes this write adds to a document (exact where it matters)."""

    def refuse(self, message: str) -> None:
        """Remember the first thing the server would refuse; the commit raises it."""
        if self.invalid is None:
            self.invalid = gexc.InvalidArgument(message)

    def check_name(self, name: Any) -> None:
        if name in _GOOD_NAMES:
            return
        if type(name) is not str or not name:
            raise ValueError("One or more components is not a string or is empty.")
        if reserved(name):
            self.refuse(f"field name '{name}' is reserved.")
        elif len(_GOOD_NAMES) < _MAX_GOOD_NAMES:
            _GOOD_NAMES.add(name)

    def map(self, data: dict[str, Any], at: Path, *, allow_delete: bool) -> dict[str, Any]:
        """Convert a map's entries; sentinels are taken out into transforms / deletes."""
        if len(at) > MAX_DEPTH:
            self.refuse(f"Property {at[0]} contains an invalid nested entity.")
        out: dict[str, Any] = {}
        size = 0
        for name, value in data.items():
            if name not in _GOOD_NAMES:
                self.check_name(name)
            size += 4 * len(name) + 9
            kind = type(value)
            # The common cases first, without building a path or calling out.
            if kind in _SCALARS or (kind is int and INT64_MIN <= value <= INT64_MAX):
                out[name] = value
                continue
            if kind is str and len(value) < _SHORT:
                size += 4 * len(value)
                out[name] = value
                continue
            path = (*at, name)
            if not isinstance(value, _SENTINELS):
                if self.merging and isinstance(value, dict) and value:
                    inner = self.map(value, path, allow_delete=True)
                    if inner:  # a map of sentinels only sets nothing itself in a merge
                        out[name] = inner
                else:
                    out[name] = self.value(value, path, allow_delete=allow_delete)
            elif value is transforms.DELETE_FIELD:
                if not allow_delete:
                    raise ValueError(f"Cannot apply DELETE_FIELD at {path}.")
                self.deletes.append(path)
            elif value is transforms.SERVER_TIMESTAMP or isinstance(value, transforms.Increment):
                self.transforms.append((path, value))
            else:
                raise NotImplementedError(f"the simulated store has no {value!r} yet")
        self.size += size
        return out

    def value(self, value: Any, at: Path, *, allow_delete: bool = False) -> Any:
        """One value as stored; raises what the client library raises for it.

        Subclasses (enums, say) are stored as their base type, as the library encodes them.
        """
        if value is None or isinstance(value, bool):
            self.size += 8
            return value
        if isinstance(value, float):
            self.size += 8
            return float(value)
        if isinstance(value, int):
            if not INT64_MIN <= value <= INT64_MAX:
                raise ValueError(f"Value out of range: {value}")
            self.size += 8
            return int(value)
        if isinstance(value, str):
            self._check_length(value, at)
            return str.__str__(value)
        if isinstance(value, bytes):
            self._check_length(value, at)
            return bytes(value)
        if isinstance(value, datetime):
            self.size += 8
            return stored_time(value)
        if isinstance(value, dict):
            return self.map(value, at, allow_delete=allow_delete)
        if isinstance(value, list | tuple | set | frozenset):
            return self._array(value, at)
        raise TypeError("Cannot convert to a Firestore Value", value, "Invalid type", type(value))

    def _check_length(self, value: str | bytes, at: Path) -> None:
        # Four bytes per character at most: only a long string needs encoding to be measured.
        size = len(value)
        if isinstance(value, str):
            if size * 4 > MAX_VALUE_BYTES:
                size = len(value.encode("utf-8"))
            else:
                self.size += 3 * size
        self.size += size + 1
        if size > MAX_VALUE_BYTES:
            if len(at) > 1:
                self.refuse(f"Property {at[0]} contains an invalid nested entity.")
            self.refuse(f'The value of property "{at[0]}" is longer than {MAX_VALUE_BYTES} bytes.')

    def _array(self, items: Any, at: Path) -> list[Any]:
        out = []
        for item in items:
            if isinstance(item, list | tuple | set | frozenset):
                self.refuse("Cannot convert an array value in an array value.")
            out.append(self.value(item, at))
        return out


def copy_value(value: Any) -> Any:
    """A deep copy of maps and arrays; everything else stored is immutable."""
    if isinstance(value, dict):
        return {k: copy_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_value(v) for v in value]
    return value


def lookup(data: dict[str, Any], path: Path) -> tuple[bool, Any]:
    """(found, value) of the field at `path`."""
    value: Any = data
    for name in path:
        if not isinstance(value, dict) or name not in value:
            return False, None
        value = value[name]
    return True, value


def with_field(data: dict[str, Any], path: Path, value: Any) -> dict[str, Any]:
    """A copy of `data` with `path` set (maps created or replaced along it); `data` is kept."""
    out = dict(data)
    head, rest = path[0], path[1:]
    if rest:
        inner = out.get(head)
        out[head] = with_field(inner if isinstance(inner, dict) else {}, rest, value)
    else:
        out[head] = value
    return out


def without_field(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """A copy of `data` without `path` (no change where it is absent); `data` is kept."""
    head, rest = path[0], path[1:]
    if head not in data:
        return data
    if not rest:
        out = dict(data)
        del out[head]
        return out
    inner = data[head]
    if not isinstance(inner, dict):
        return data
    trimmed = without_field(inner, rest)
    if trimmed is inner:
        return data
    out = dict(data)
    out[head] = trimmed
    return out


def merged(data: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`set(merge=True)`: maps merge entry by entry, any other value replaces."""
    out = dict(data)
    for name, value in changes.items():
        inner = out.get(name)
        if isinstance(value, dict) and value and isinstance(inner, dict):
            out[name] = merged(inner, value)
        else:
            out[name] = value
    return out


def incremented(current: Any, operand: int | float) -> int | float:
    """Firestore's `Increment`: a non-number is replaced; int64 saturates; a float wins."""
    if isinstance(current, bool) or not isinstance(current, int | float):
        return operand
    if isinstance(current, int) and isinstance(operand, int):
        return max(INT64_MIN, min(INT64_MAX, current + operand))
    return float(current) + float(operand)


# -- ordering -------------------------------------------------------------------------------

_NULL, _BOOL, _NUMBER, _TIME, _STRING, _BYTES, _ARRAY, _MAP = 0, 1, 2, 3, 4, 5, 8, 9


def type_rank(value: Any) -> int:
    """Firestore's order of value types: null < bool < number < timestamp < string < ..."""
    if value is None:
        return _NULL
    if isinstance(value, bool):
        return _BOOL
    if isinstance(value, int | float):
        return _NUMBER
    if isinstance(value, datetime):
        return _TIME
    if isinstance(value, str):
        return _STRING
    if isinstance(value, bytes):
        return _BYTES
    if isinstance(value, list):
        return _ARRAY
    return _MAP


def order_key(value: Any) -> tuple[Any, ...]:
    """A key that sorts values as Firestore does (NaN first among numbers)."""
    rank = type_rank(value)
    if rank == _NULL:
        return (rank,)
    if rank == _NUMBER:
        return (rank, 0) if math.isnan(value) else (rank, 1, value)
    if rank == _ARRAY:
        return (rank, tuple(order_key(v) for v in value))
    if rank == _MAP:
        return (rank, tuple((k, order_key(value[k])) for k in sorted(value)))
    return (rank, value)


def same_value(a: Any, b: Any) -> bool:
    """Firestore equality: 1 == 1.0, NaN == NaN, never across types."""
    return order_key(a) == order_key(b)


def document_size(path: str, data: dict[str, Any]) -> int:
    """Firestore's storage size of a document (name, fields, 32 bytes of overhead)."""
    return len(path.encode("utf-8")) + 1 + _map_size(data) + 32


def _map_size(data: dict[str, Any]) -> int:
    return sum(len(k.encode("utf-8")) + 1 + _value_size(v) for k, v in data.items())


def _value_size(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8")) + 1
    if isinstance(value, bytes):
        return len(value) + 1
    if isinstance(value, dict):
        return _map_size(value)
    if isinstance(value, list):
        return sum(_value_size(v) for v in value)
    return 8 if value is not None and not isinstance(value, bool) else 1
