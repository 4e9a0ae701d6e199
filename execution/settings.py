"""Settings read once from the environment into one immutable object, with safe local defaults.

Each setting is declared once, as a field of `Settings`: its default, the variable that sets it,
how that variable is read and, for numbers, the range it must fall in. `Settings.from_env` and
`BOUNDS` (the README's settings table) are derived from those declarations.

A refusal (`SettingsError`) names the variable and what it must be, never the text it holds: a
deploy that maps a secret to the wrong variable (`--set-secrets AGENT_MODE=alpaca-secret:latest`,
a swapped line in an env file) would otherwise print the broker key into the start-up error,
which functions-framework writes to the logs and Error Reporting. Only a number that was read as
one is shown (`got 600`); the secret fields are also left out of `repr`.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta
from enum import StrEnum
from typing import Any, TypeVar
from urllib.parse import urlsplit

from execution.account_state import DEFAULT_CLOCK_SKEW_SECONDS
from execution.errors import SettingsError

MAX_EVENT_FUNCTION_TIMEOUT_SECONDS = 540
"""The longest an event-driven (Pub/Sub) Cloud Function may run."""

MAX_SHARED_READ_AGE_SECONDS = 60.0
"""The longest a kill switch flipped on may take to halt an instance's trading."""

LEASE_GRACE_SECONDS = 60.0
"""How far an unset `RESERVATION_TTL_SECONDS` reaches past the function timeout."""

BROKER_TIMEOUT_CAP_SECONDS = 10.0
"""An unset `BROKER_TIMEOUT_SECONDS` is this, or half the function timeout where that is less."""

ALPACA_PAPER_HOST = "paper-api.alpaca.markets"
ALPACA_PAPER_URL = f"https://{ALPACA_PAPER_HOST}"


def alpaca_url_is_paper(url: str) -> bool:
    """True only for Alpaca's paper endpoint: anything else may move real money."""
    return urlsplit(url).hostname == ALPACA_PAPER_HOST


@dataclass(frozen=True)
class Bound:
    """The range a numeric setting must fall in, and the variable that sets it."""

    variable: str
    low: float
    high: float
    unit: str
    low_inclusive: bool = False

    def holds(self, value: float) -> bool:
        """Whether `value` is inside the range (NaN never is)."""
        above = value >= self.low if self.low_inclusive else value > self.low
        return above and value <= self.high

    def describe(self) -> str:
        """The range in words, for the refusal message and the README."""
        lower = f"at least {self.low:g}" if self.low_inclusive else f"above {self.low:g}"
        return f"{lower} and at most {self.high:g} {self.unit}"


_BROKER_SECRET = re.compile(r"[\x21-\x7e]+")
"""Printable ASCII without spaces: anything else cannot travel in an HTTP header unquoted."""


def check_broker_secret(variable: str, value: str | None) -> None:
    """Refuse a key that holds a space, a control or a non-ASCII character, never quoting it."""
    if value is not None and not _BROKER_SECRET.fullmatch(value):
        raise SettingsError(
            f"{variable} holds a space, a control character or a non-ASCII character "
            "(value not shown); set it to the key exactly as Alpaca issued it."
        )


def check_alpaca_keys(key_id: str | None, secret_key: str | None) -> None:
    """Refuse Alpaca without both keys, or with a key no HTTP header can carry."""
    if not (key_id and secret_key):
        raise SettingsError(
            "BROKER=alpaca needs APCA_API_KEY_ID and APCA_API_SECRET_KEY to be set."
        )
    check_broker_secret("APCA_API_KEY_ID", key_id)
    check_broker_secret("APCA_API_SECRET_KEY", secret_key)


class AgentMode(StrEnum):
    """How far execution may go (contract): OFF and OBSERVE never reach a broker."""

    OFF = "OFF"
    OBSERVE = "OBSERVE"
    PAPER = "PAPER"
    LIVE = "LIVE"


# --- how a variable's text becomes a value (called only on text that is not blank) ----------

Reader = Callable[[str, str], object]
"""(variable, stripped non-blank text) -> value, or `SettingsError` naming the variable."""


def _text(name: str, raw: str) -> str:
    return raw


def _lowered(name: str, raw: str) -> str:
    return raw.lower()


def _url(name: str, raw: str) -> str:
    check_plain_url(name, raw)
    return raw.rstrip("/")


def check_plain_url(variable: str, url: str) -> None:
    """Refuse a base URL with credentials, a query or a fragment, never quoting it.

    Paths are appended to it: `?` or `#` would send every request to the wrong place (and a
    404 there is no answer about an order), and a password in it would be quoted by errors.
    """
    parts = urlsplit(url.strip())
    if "@" in parts.netloc or "?" in url or "#" in url:
        raise SettingsError(
            f"{variable} must be a plain URL such as {ALPACA_PAPER_URL}: no credentials, query "
            "or fragment (value not shown)."
        )


def _unshown(raw: str) -> str:
    """How a refused value is described: never quoted (see the module docstring)."""
    return f"(a value of {len(raw)} characters, not shown)"


def _flag(name: str, raw: str) -> bool:
    value = raw.lower()
    if value in {"0", "false", "no", "off"}:
        return False
    if value in {"1", "true", "yes", "on"}:
        return True
    raise SettingsError(f"{name} is not a boolean {_unshown(raw)}; use 1 or 0.")


def _number(name: str, raw: str) -> float:
    """A finite number; its range is checked by `Settings.validate` against `BOUNDS`."""
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} is not a number {_unshown(raw)}.") from None
    if not math.isfinite(value):
        raise SettingsError(f"{name} must be a finite number, got {value}.")
    return value


def _integer(name: str, raw: str) -> int:
    value = _number(name, raw)
    if value != int(value):
        raise SettingsError(f"{name} must be a whole number, got {value:g}.")
    return int(value)


def _agent_mode(name: str, raw: str) -> AgentMode:
    try:
        return AgentMode(raw.upper())
    except ValueError:
        raise SettingsError(
            f"{name} is unknown {_unshown(raw)}; use one of OFF, OBSERVE, PAPER, LIVE."
        ) from None


_T = TypeVar("_T")


def _setting(
    default: _T,
    variables: str | tuple[str, ...],
    read: Reader,
    *,
    bound: tuple[float, float, str] | None = None,
    low_inclusive: bool = False,
    secret: bool = False,
) -> _T:
    """Declare a setting: its default, its variable(s) (the first one set wins), its reader and,
    for a number, its range (low, high, unit)."""
    names = (variables,) if isinstance(variables, str) else variables
    limits = None if bound is None else Bound(names[0], *bound, low_inclusive=low_inclusive)
    metadata = {"variables": names, "read": read, "bound": limits}
    return field(default=default, repr=not secret, metadata=metadata)


@dataclass(frozen=True)
class Settings:
    """Everything configurable about an instance; see the README's settings table."""

    project: str | None = _setting(None, ("GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT"), _text)
    broker: str = _setting("paper", "BROKER", _lowered)
    alpaca_key_id: str | None = _setting(None, "APCA_API_KEY_ID", _text, secret=True)
    alpaca_secret_key: str | None = _setting(None, "APCA_API_SECRET_KEY", _text, secret=True)
    alpaca_base_url: str = _setting(ALPACA_PAPER_URL, "APCA_API_BASE_URL", _url)
    broker_timeout_seconds: float = _setting(
        BROKER_TIMEOUT_CAP_SECONDS, "BROKER_TIMEOUT_SECONDS", _number, bound=(0, 120, "seconds")
    )
    # `_setting` returns a `dataclasses.field`: the default is a StrEnum member, immutable.
    agent_mode: AgentMode = _setting(AgentMode.PAPER, "AGENT_MODE", _agent_mode)  # noqa: RUF009
    execution_halted: bool = _setting(False, "EXECUTION_HALTED", _flag)
    execution_dry_run: bool = _setting(False, "EXECUTION_DRY_RUN", _flag)
    function_timeout_seconds: float = _setting(
        float(MAX_EVENT_FUNCTION_TIMEOUT_SECONDS),
        "FUNCTION_TIMEOUT_SECONDS",
        _number,
        bound=(
            0,
            MAX_EVENT_FUNCTION_TIMEOUT_SECONDS,
            "seconds (the longest an event-driven Cloud Function may run)",
        ),
    )
    reservation_ttl_seconds: float = _setting(
        MAX_EVENT_FUNCTION_TIMEOUT_SECONDS + LEASE_GRACE_SECONDS,
        "RESERVATION_TTL_SECONDS",
        _number,
        bound=(0, 3600, "seconds"),
    )
    intent_max_age_seconds: float = _setting(
        300.0, "INTENT_MAX_AGE_SECONDS", _number, bound=(0, 86_400, "seconds")
    )
    intent_topic: str = _setting("trade-intents", "INTENT_TOPIC", _text)
    firestore_timeout_seconds: float = _setting(
        10.0, "FIRESTORE_TIMEOUT_SECONDS", _number, bound=(0, 60, "seconds")
    )
    reservation_max_attempts: int = _setting(
        12, "RESERVATION_MAX_ATTEMPTS", _integer, bound=(1, 100, "attempts"), low_inclusive=True
    )
    """Optimistic commits an acquire tries; 12 let a burst of 64 intents on one budgeted account
    all reserve in about 3 s on the emulator, where 6 sent 12 of them to a redelivery (>= 60 s)."""
    risk_fail_open: bool = _setting(False, "RISK_FAIL_OPEN", _flag)
    require_account_document: bool = _setting(False, "REQUIRE_ACCOUNT_DOCUMENT", _flag)
    router_max_spread_bps: float = _setting(
        50.0, "ROUTER_MAX_SPREAD_BPS", _number, bound=(0, 10_000, "basis points")
    )
    router_quote_max_age_seconds: float = _setting(
        60.0, "ROUTER_QUOTE_MAX_AGE_SECONDS", _number, bound=(0, 86_400, "seconds")
    )
    router_strict: bool = _setting(False, "ROUTER_STRICT", _flag)
    sweep_deadline_seconds: float = _setting(
        60.0, "SWEEP_DEADLINE_SECONDS", _number, bound=(0, 3600, "seconds")
    )
    # At least 2: a finished reservation must outlive Pub/Sub's redelivery window (1 day) to
    # answer duplicates; at most about 10 years, far inside what a timestamp can hold.
    reservation_retention_days: float = _setting(
        30.0,
        "RESERVATION_RETENTION_DAYS",
        _number,
        bound=(2, 3650, "days"),
        low_inclusive=True,
    )
    shared_read_max_age_seconds: float = _setting(
        1.0,
        "SHARED_READ_MAX_AGE_SECONDS",
        _number,
        bound=(
            0,
            MAX_SHARED_READ_AGE_SECONDS,
            "seconds (how long a kill switch may take to halt trading)",
        ),
        low_inclusive=True,
    )
    clock_skew_seconds: float = _setting(
        DEFAULT_CLOCK_SKEW_SECONDS,
        "CLOCK_SKEW_SECONDS",
        _number,
        bound=(0, 60, "seconds (how far instances' clocks may disagree)"),
        low_inclusive=True,
    )
    """How far instances' clocks may disagree: a broker call must end this long before the lease
    lapses (see `ExecutionEngine._check_lease_room`)."""
    reconcile_lookback_seconds: float = _setting(
        86400.0, "RECONCILE_LOOKBACK_SECONDS", _number, bound=(0, 604_800, "seconds")
    )
    """How far back the reconciler compares the broker's orders (a day: Pub/Sub's redelivery)."""

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read settings from `environ` (default: the process environment); a variable that is
        unset or blank keeps its default."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for declared in fields(cls):
            for variable in declared.metadata["variables"]:
                # A console paste or `echo` into Secret Manager adds a newline: surrounding
                # whitespace is never part of a value (keys are checked unquoted by `validate`).
                raw = env.get(variable, "").strip()
                if raw:
                    values[declared.name] = declared.metadata["read"](variable, raw)
                    break
        timeout = values.get("function_timeout_seconds", cls.function_timeout_seconds)
        values.setdefault("broker_timeout_seconds", min(BROKER_TIMEOUT_CAP_SECONDS, timeout / 2))
        values.setdefault("reservation_ttl_seconds", timeout + LEASE_GRACE_SECONDS)
        return cls(**values)

    def validate(self) -> None:
        """Refuse settings that would let a failed trade poison the system."""
        for name, bound in BOUNDS.items():
            value = getattr(self, name)
            if not bound.holds(value):
                raise SettingsError(f"{bound.variable} must be {bound.describe()}, got {value:g}.")
        check_broker_secret("APCA_API_KEY_ID", self.alpaca_key_id)
        check_broker_secret("APCA_API_SECRET_KEY", self.alpaca_secret_key)
        self._check_timing()
        self._check_broker()

    def _check_timing(self) -> None:
        if self.reservation_ttl_seconds <= self.function_timeout_seconds:
            raise SettingsError(
                f"RESERVATION_TTL_SECONDS ({self.reservation_ttl_seconds:g}) must exceed "
                f"FUNCTION_TIMEOUT_SECONDS ({self.function_timeout_seconds:g}), or a live "
                "invocation's lease could be taken over; unset it to use timeout + 60."
            )
        if self.broker_timeout_seconds >= self.function_timeout_seconds:
            raise SettingsError(
                f"BROKER_TIMEOUT_SECONDS ({self.broker_timeout_seconds:g}) must be below "
                f"FUNCTION_TIMEOUT_SECONDS ({self.function_timeout_seconds:g}), so a hung broker "
                "call ends as a retry instead of a killed invocation."
            )

    def _check_broker(self) -> None:
        if self.broker not in {"paper", "alpaca"}:
            raise SettingsError(
                f"BROKER is unknown {_unshown(self.broker)}; use 'paper' or 'alpaca'."
            )
        if self.broker == "alpaca":
            check_alpaca_keys(self.alpaca_key_id, self.alpaca_secret_key)
            self._check_alpaca_url()
        if self.broker_call_seconds + self.clock_skew_seconds >= self.reservation_ttl_seconds:
            raise SettingsError(
                f"RESERVATION_TTL_SECONDS ({self.reservation_ttl_seconds:g}) leaves no room for a "
                f"broker call ({self.broker_call_seconds:g} s) plus CLOCK_SKEW_SECONDS "
                f"({self.clock_skew_seconds:g}): no intent could ever reach the broker."
            )

    def _check_alpaca_url(self) -> None:
        paper_url = alpaca_url_is_paper(self.alpaca_base_url)
        if self.agent_mode is AgentMode.PAPER and not paper_url:
            raise SettingsError(
                f"AGENT_MODE=PAPER with an APCA_API_BASE_URL other than {ALPACA_PAPER_URL} "
                f"{_unshown(self.alpaca_base_url)} would trade live; use {ALPACA_PAPER_URL} or "
                "set AGENT_MODE=LIVE."
            )
        if self.agent_mode is AgentMode.LIVE and paper_url:
            raise SettingsError(
                "AGENT_MODE=LIVE with Alpaca's paper URL places no live orders; set "
                "APCA_API_BASE_URL=https://api.alpaca.markets or AGENT_MODE=PAPER."
            )

    @property
    def broker_call_seconds(self) -> float:
        """The longest one broker call may take: Alpaca's deadline, or the paper broker's store."""
        if self.broker == "alpaca":
            return self.broker_timeout_seconds
        return self.firestore_timeout_seconds

    @property
    def halt_settle_seconds(self) -> float:
        """How long after a kill switch goes on an order admitted before it may still reach the
        broker: the switch read's age, one whole broker call, and clock skew to spare. (A
        process paused between its authority check and its call can land later still.)"""
        return self.shared_read_max_age_seconds + self.broker_call_seconds + self.clock_skew_seconds

    @property
    def reservation_retention(self) -> timedelta:
        """How long a finished reservation is kept (its `purge_at`) to answer duplicates."""
        return timedelta(days=self.reservation_retention_days)


BOUNDS: dict[str, Bound] = {
    declared.name: declared.metadata["bound"]
    for declared in fields(Settings)
    if declared.metadata["bound"] is not None
}
"""Every duration, count and size, bounded on both sides (the README's settings table)."""
