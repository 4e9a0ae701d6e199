"""Keeping broker keys out of every text an error can carry: messages, causes, logs.

An error can quote a key in more forms than the one we sent: h11 quotes a refused header value or
a broker's illegal status line as `repr` of its bytes (and httpcore's log repr's that again), a
URL or a query string carries it percent-encoded, a JSON body escaped, and a broker may echo it
back in any of these in a body, a reason phrase or a header line — Go's JSON as `\\u0026`, an HTML
error page as `&amp;`. So a `SecretScrubber` replaces each key raw or URL-encoded, under any depth
of repr or JSON escaping, any character of it as a `\\u00XX` escape or an HTML character
reference, and is used on three paths:

- the text of every error an adapter raises or logs (`scrub`);
- the cause chained to it (`scrubbed_cause`): a copy carrying the scrubbed text, because the
  original exception would be printed by functions-framework's traceback;
- the HTTP stack's own log records (`scrub_http_logs`): httpx logs the broker's reason phrase at
  INFO and httpcore its response headers at DEBUG.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

REDACTED = "[redacted]"

HTTP_LOGGERS = (
    "httpx",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
)
"""Every logger httpx and httpcore write to (their records may quote what the broker sent)."""


def secret_forms(secret: str) -> set[str]:
    """The encodings an error may quote `secret` in: as it is, or URL-encoded (three ways)."""
    return {
        form for form in (secret, quote(secret, safe=""), quote(secret), quote_plus(secret)) if form
    }


_HTML_NAMED = {"&": "amp", "<": "lt", ">": "gt", '"': "quot", "'": "apos"}


def _escaped(form: str) -> str:
    """An expression matching `form` however many times it was repr'd, JSON- or HTML-escaped.

    Keys hold printable ASCII only (`check_broker_secret`), so repr and JSON escaping can only
    put backslashes before a character (`'`, `"`, `/`) or double the backslashes a key holds:
    any run of backslashes is allowed before each character. A character may also come as a
    JSON `\\u00XX` escape (Go's encoder writes `&`, `<`, `>` so: Alpaca's API is Go) or an HTML
    character reference (`&amp;`, `&#38;`, `&#x26;`: a gateway's error page).
    """
    return "".join(r"\\*" + _escaped_char(char) for char in form)


def _escaped_char(char: str) -> str:
    code = ord(char)
    forms = [
        r"\\+" if char == "\\" else re.escape(char),
        rf"\\+u{code:04x}",
        rf"&#0*{code};",
        rf"&#x0*{code:x};",
    ]
    if char in _HTML_NAMED:
        forms.append(f"&{_HTML_NAMED[char]};")
    return "(?:" + "|".join(forms) + ")"


class SecretScrubber:
    """Replaces every form of the given secrets with `[redacted]`."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms = set().union(*(secret_forms(secret) for secret in secrets if secret))
        # Longest first, so that a form containing another is replaced whole; case-insensitive,
        # since percent-encoding comes in both cases (%2F, %2f).
        alternatives = [_escaped(form) for form in sorted(forms, key=len, reverse=True)]
        self._pattern = re.compile("|".join(alternatives), re.IGNORECASE) if alternatives else None

    @property
    def pattern(self) -> str | None:
        """The expression matching every form (None: nothing to scrub)."""
        return None if self._pattern is None else self._pattern.pattern

    def scrub(self, text: str) -> str:
        """`text` without any form of the secrets."""
        return text if self._pattern is None else self._pattern.sub(REDACTED, text)

    def scrubbed_cause(self, exc: BaseException) -> BaseException:
        """A stand-in for `exc` to chain with `raise ... from`: its type where it can be rebuilt
        from a message, the scrubbed text, and neither causes nor traceback (whose frames hold
        the keys among their locals)."""
        text = self.scrub(str(exc))
        try:
            copy = type(exc)(text)
        except Exception:  # a type that needs more than a message (JSONDecodeError, ...)
            copy = RuntimeError(f"{type(exc).__name__}: {text}")
        if self.scrub(str(copy)) != str(copy):  # a constructor that adds text of its own
            copy = RuntimeError(f"{type(exc).__name__}: {text}")
        copy.__suppress_context__ = True
        return copy

    def scrub_http_logs(self) -> None:
        """Scrub these secrets from every record httpx and httpcore log from now on."""
        _HTTP_LOG_SCRUBBER.add(self)


class _ScrubbingFilter(logging.Filter):
    """Rewrites a record's message with every registered scrubber (never drops a record)."""

    def __init__(self) -> None:
        super().__init__()
        # By pattern: many brokers with the same keys (one per test, say) scrub once.
        self._scrubbers: dict[str, SecretScrubber] = {}
        self._lock = threading.Lock()

    def add(self, scrubber: SecretScrubber) -> None:
        if scrubber.pattern is None:
            return
        with self._lock:
            if not self._scrubbers:
                for name in HTTP_LOGGERS:
                    logging.getLogger(name).addFilter(self)
            self._scrubbers.setdefault(scrubber.pattern, scrubber)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        for scrubber in list(self._scrubbers.values()):
            message = scrubber.scrub(message)
        record.msg, record.args = message, None
        return True


_HTTP_LOG_SCRUBBER = _ScrubbingFilter()
