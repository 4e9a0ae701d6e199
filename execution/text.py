"""Text from outside made safe to store and log (printable, bounded in length), and JSON from
outside read one way (`read_json`)."""

from __future__ import annotations

import json
from typing import Any

_MAX_KEY_CHARS = 64


def _escaped(char: str) -> str:
    # `unicode_escape` writes control characters and lone surrogates as `\n`, `\x00`, `\ud800`:
    # readable, and valid UTF-8 wherever the text goes (Firestore refuses lone surrogates).
    return char if char.isprintable() else char.encode("unicode_escape").decode("ascii")


def printable(text: str, keep: str = "\n\t") -> str:
    """`text` with unprintable characters escaped but those in `keep` (line breaks, for a
    terminal): a control sequence from outside is shown, never run."""
    return "".join(char if char in keep else _escaped(char) for char in text)


def bounded_printable(text: str, max_chars: int) -> str:
    """`text` with unprintable characters escaped, cut to `max_chars` with a note of its length."""
    escaped = "".join(_escaped(char) for char in text[: max_chars + 1])
    if len(text) <= max_chars and len(escaped) <= max_chars:
        return escaped
    note = f"... [cut: {len(text)} characters]"
    return escaped[: max(max_chars - len(note), 0)] + note


class UnreadableJsonError(ValueError):
    """Bytes that are not JSON as every reader reads it; the message says why (and quotes no
    more of the input than a bounded, printable key)."""


class RepeatedKeyError(UnreadableJsonError):
    """A JSON object names one key twice: which value the publisher meant is a guess."""


def read_json(data: bytes | str) -> Any:
    """`data` as JSON (RFC 8259), read the one way every reader reads it; else
    `UnreadableJsonError` (a `ValueError`) saying why. Never raises anything else.

    Python's `json.loads` reads more than JSON, and each extra is a payload that this service
    and another reader (the publisher's own check, an audit, a Go or JavaScript consumer, the
    operator's command line) would see differently, or that crashes the next reader:

    - a key written twice (Python keeps the last, others the first): refused;
    - `NaN`, `Infinity`, `-Infinity` (not JSON; most parsers refuse them): refused;
    - UTF-16 or UTF-32 bytes, or a UTF-8 byte-order mark (`json.loads` guesses the encoding
      from the first bytes; JSON between systems is UTF-8 without one): refused;
    - nesting past the interpreter's recursion limit (`RecursionError`, not a `ValueError`, so
      an `except ValueError` reader crashes on it), an integer past Python's 4300-digit
      conversion limit: refused, with the reason.
    """
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as exc:
        raise UnreadableJsonError(
            f"not JSON: byte {exc.object[exc.start]:#04x} at {exc.start} is not UTF-8, "
            "which JSON between systems is"
        ) from None
    if text.startswith("\ufeff"):
        raise UnreadableJsonError(
            "not JSON: a byte-order mark starts it; JSON between systems is UTF-8 without one"
        )
    try:
        return json.loads(
            text, object_pairs_hook=_object_without_repeats, parse_constant=_no_constant
        )
    except UnreadableJsonError:
        raise
    except RecursionError:
        raise UnreadableJsonError("JSON nested too deeply to read") from None
    except json.JSONDecodeError as exc:
        raise UnreadableJsonError(f"not JSON: {exc}") from None
    except ValueError as exc:  # an integer past Python's 4300-digit conversion limit
        raise UnreadableJsonError(f"unreadable JSON value: {exc}") from None


def _no_constant(token: str) -> Any:
    raise UnreadableJsonError(f"not JSON: {token} is not a JSON number (RFC 8259)")


def _object_without_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`json.loads`'s object hook: the object, refused where a key repeats.

    Python keeps the last of `{"qty": 1, "qty": 1000}`, other readers the first: the publisher's
    own check, a log viewer or an audit may have seen another intent than the one executed.
    """
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            shown = bounded_printable(key, _MAX_KEY_CHARS)
            raise RepeatedKeyError(f"key {shown!r} is written more than once in one JSON object")
        document[key] = value
    return document
