"""Text from outside made safe to store and log: printable, and bounded in length."""

from __future__ import annotations


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
