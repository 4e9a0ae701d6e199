"""Settings read once from the environment into one immutable object, with safe local defaults."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from urllib.parse import urlsplit

from execution.errors import SettingsError

MAX_EVENT_FUNCTION_TIMEOUT_SECONDS = 540
"""The longest an event-driven (Pub/Sub) Cloud Function may run."""

MAX_SHARED_READ_AGE_SECONDS = 60.0
"""The longest a kill switch flipped on may take to halt an instance's trading."""

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


BOUNDS: dict[str, Bound] = {
    "broker_timeout_seconds": Bound("BROKER_TIMEOUT_SECONDS", 0, 120, "seconds"),
    "function_timeout_seconds": Bound(
        "FUNCTION_TIMEOUT_SECONDS",
        0,
        MAX_EVENT_FUNCTION_TIMEOUT_SECONDS,
        "seconds (the longest an event-driven Cloud Function may run)",
    ),
    "reservation_ttl_seconds": Bound("RESERVATION_TTL_SECONDS", 0, 3600, "seconds"),
    "intent_max_age_seconds": Bound("INTENT_MAX_AGE_SECONDS", 0, 86_400, "seconds"),
    "firestore_timeout_seconds": Bound("FIRESTORE_TIMEOUT_SECONDS", 0, 60, "seconds"),
    "reservation_max_attempts": Bound(
        "RESERVATION_MAX_ATTEMPTS", 1, 100, "attempts", low_inclusive=True
    ),
    "router_max_spread_bps": Bound("ROUTER_MAX_SPREAD_BPS", 0, 10_000, "basis points"),
    "router_quote_max_age_seconds": Bound("ROUTER_QUOTE_MAX_AGE_SECONDS", 0, 86_400, "seconds"),
    "sweep_deadline_seconds": Bound("SWEEP_DEADLINE_SECONDS", 0, 3600, "seconds"),
    # At least 2: a finished reservation must outlive Pub/Sub's redelivery window (1 day) to
    # answer duplicates; at most about 10 years, far inside what a timestamp can hold.
    "reservation_retention_days": Bound(
        "RESERVATION_RETENTION_DAYS", 2, 3650, "days", low_inclusive=True
    ),
    "clock_skew_seconds": Bound(
        "CLOCK_SKEW_SECONDS",
        0,
        60,
        "seconds (how far instances' clocks may disagree)",
        low_inclusive=True,
    ),
    "reconcile_lookback_seconds": Bound("RECONCILE_LOOKBACK_SECONDS", 0, 604_800, "seconds"),
    "shared_read_max_age_seconds": Bound(
        "SHARED_READ_MAX_AGE_SECONDS",
        0,
        MAX_SHARED_READ_AGE_SECONDS,
        "seconds (how long a kill switch may take to halt trading)",
        low_inclusive=True,
    ),
}
"""Every duration, count and size, bounded on both sides (the README's settings table)."""

_BROKER_SECRET = re.compile(r"[\x21-\x7e]+")
"""Printable ASCII without spaces: anything else cannot travel in an HTTP header unquoted."""


def check_broker_secret(variable: str, value: str | None) -> None:
    """Refuse a key that holds a space, a control or a non-ASCII character, never quoting it."""
    if value is not None and not _BROKER_SECRET.fullmatch(value):
        raise SettingsError(
            f"{variable} holds a space, a control character or a non-ASCII character "
            "(value not shown); set it to the key exactly as Alpaca issued it."
        )


class AgentMode(StrEnum):
    """How far execution may go (contract): OFF and OBSERVE never reach a broker."""

    OFF = "OFF"
    OBSERVE = "OBSERVE"
    PAPER = "PAPER"
    LIVE = "LIVE"


@dataclass(frozen=True)
class Settings:
    """Everything configurable about an instance; see the README's settings table."""

    project: str | None = None
    broker: str = "paper"
    alpaca_key_id: str | None = field(default=None, repr=False)
    alpaca_secret_key: str | None = field(default=None, repr=False)
    alpaca_base_url: str = ALPACA_PAPER_URL
    broker_timeout_seconds: float = 10.0
    agent_mode: AgentMode = AgentMode.PAPER
    execution_halted: bool = False
    execution_dry_run: bool = False
    function_timeout_seconds: float = 540.0
    reservation_ttl_seconds: float = 600.0
    intent_max_age_seconds: float = 300.0
    intent_topic: str = "trade-intents"
    firestore_timeout_seconds: float = 10.0
    reservation_max_attempts: int = 12
    """Optimistic commits an acquire tries; 12 let a burst of 64 intents on one budgeted account
    all reserve in about 3 s on the emulator, where 6 sent 12 of them to a redelivery (>= 60 s)."""
    risk_fail_open: bool = False
    require_account_document: bool = False
    router_max_spread_bps: float = 50.0
    router_quote_max_age_seconds: float = 60.0
    router_strict: bool = False
    sweep_deadline_seconds: float = 60.0
    reservation_retention_days: float = 30.0
    shared_read_max_age_seconds: float = 1.0
    clock_skew_seconds: float = 5.0
    """How far instances' clocks may disagree: a broker call must end this long before the lease
    lapses (see `ExecutionEngine._check_lease_room`)."""
    reconcile_lookback_seconds: float = 86400.0
    """How far back the reconciler compares the broker's orders (a day: Pub/Sub's redelivery)."""

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read settings from `environ` (default: the process environment)."""
        env = os.environ if environ is None else environ
        timeout = _number(env, "FUNCTION_TIMEOUT_SECONDS", 540.0)
        return cls(
            project=env.get("GOOGLE_CLOUD_PROJECT") or env.get("GCLOUD_PROJECT") or None,
            broker=env.get("BROKER", "paper").strip().lower(),
            alpaca_key_id=_secret(env, "APCA_API_KEY_ID"),
            alpaca_secret_key=_secret(env, "APCA_API_SECRET_KEY"),
            alpaca_base_url=env.get("APCA_API_BASE_URL", ALPACA_PAPER_URL).rstrip("/"),
            broker_timeout_seconds=_number(env, "BROKER_TIMEOUT_SECONDS", min(10.0, timeout / 2)),
            agent_mode=_agent_mode(env.get("AGENT_MODE") or "PAPER"),
            execution_halted=_flag(env, "EXECUTION_HALTED"),
            execution_dry_run=_flag(env, "EXECUTION_DRY_RUN"),
            function_timeout_seconds=timeout,
            reservation_ttl_seconds=_number(env, "RESERVATION_TTL_SECONDS", timeout + 60.0),
            intent_max_age_seconds=_number(env, "INTENT_MAX_AGE_SECONDS", 300.0),
            intent_topic=env.get("INTENT_TOPIC", "trade-intents"),
            firestore_timeout_seconds=_number(env, "FIRESTORE_TIMEOUT_SECONDS", 10.0),
            reservation_max_attempts=_integer(env, "RESERVATION_MAX_ATTEMPTS", 12),
            risk_fail_open=_flag(env, "RISK_FAIL_OPEN"),
            require_account_document=_flag(env, "REQUIRE_ACCOUNT_DOCUMENT"),
            router_max_spread_bps=_number(env, "ROUTER_MAX_SPREAD_BPS", 50.0),
            router_quote_max_age_seconds=_number(env, "ROUTER_QUOTE_MAX_AGE_SECONDS", 60.0),
            router_strict=_flag(env, "ROUTER_STRICT"),
            sweep_deadline_seconds=_number(env, "SWEEP_DEADLINE_SECONDS", 60.0),
            reservation_retention_days=_number(env, "RESERVATION_RETENTION_DAYS", 30.0),
            shared_read_max_age_seconds=_number(env, "SHARED_READ_MAX_AGE_SECONDS", 1.0),
            clock_skew_seconds=_number(env, "CLOCK_SKEW_SECONDS", 5.0),
            reconcile_lookback_seconds=_number(env, "RECONCILE_LOOKBACK_SECONDS", 86400.0),
        )

    def validate(self) -> None:
        """Refuse settings that would let a failed trade poison the system."""
        for name, bound in BOUNDS.items():
            value = getattr(self, name)
            if not bound.holds(value):
                raise SettingsError(f"{bound.variable} must be {bound.describe()}, got {value:g}.")
        check_broker_secret("APCA_API_KEY_ID", self.alpaca_key_id)
        check_broker_secret("APCA_API_SECRET_KEY", self.alpaca_secret_key)
        if self.reservation_ttl_seconds <= self.function_timeout_seconds:
            raise SettingsError(
                f"RESERVATION_TTL_SECONDS ({self.reservation_ttl_seconds:g}) must exceed "
                f"FUNCTION_TIMEOUT_SECONDS ({self.function_timeout_seconds:g}), or a live "
                "invocation's lease could be taken over; unset it to use timeout + 60."
            )
        if self.broker not in {"paper", "alpaca"}:
            raise SettingsError(f"BROKER={self.broker!r} is unknown; use 'paper' or 'alpaca'.")
        if self.broker == "alpaca" and not (self.alpaca_key_id and self.alpaca_secret_key):
            raise SettingsError(
                "BROKER=alpaca needs APCA_API_KEY_ID and APCA_API_SECRET_KEY to be set."
            )
        if self.broker_timeout_seconds >= self.function_timeout_seconds:
            raise SettingsError(
                f"BROKER_TIMEOUT_SECONDS ({self.broker_timeout_seconds:g}) must be below "
                f"FUNCTION_TIMEOUT_SECONDS ({self.function_timeout_seconds:g}), so a hung broker "
                "call ends as a retry instead of a killed invocation."
            )
        paper_url = alpaca_url_is_paper(self.alpaca_base_url)
        if self.broker == "alpaca" and self.agent_mode is AgentMode.PAPER and not paper_url:
            raise SettingsError(
                f"AGENT_MODE=PAPER with APCA_API_BASE_URL={self.alpaca_base_url} would trade "
                f"live; use {ALPACA_PAPER_URL} or set AGENT_MODE=LIVE."
            )
        if self.broker == "alpaca" and self.agent_mode is AgentMode.LIVE and paper_url:
            raise SettingsError(
                "AGENT_MODE=LIVE with Alpaca's paper URL places no live orders; set "
                "APCA_API_BASE_URL=https://api.alpaca.markets or AGENT_MODE=PAPER."
            )
        if self.broker_call_seconds + self.clock_skew_seconds >= self.reservation_ttl_seconds:
            raise SettingsError(
                f"RESERVATION_TTL_SECONDS ({self.reservation_ttl_seconds:g}) leaves no room for a "
                f"broker call ({self.broker_call_seconds:g} s) plus CLOCK_SKEW_SECONDS "
                f"({self.clock_skew_seconds:g}): no intent could ever reach the broker."
            )

    @property
    def broker_call_seconds(self) -> float:
        """The longest one broker call may take: Alpaca's deadline, or the paper broker's store."""
        if self.broker == "alpaca":
            return self.broker_timeout_seconds
        return self.firestore_timeout_seconds

    @property
    def reservation_retention(self) -> timedelta:
        """How long a finished reservation is kept (its `purge_at`) to answer duplicates."""
        return timedelta(days=self.reservation_retention_days)

    @property
    def broker_is_paper(self) -> bool:
        """True where the configured broker cannot move real money."""
        return self.broker == "paper" or alpaca_url_is_paper(self.alpaca_base_url)


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "").strip().lower()
    if value in {"", "0", "false", "no", "off"}:
        return False
    if value in {"1", "true", "yes", "on"}:
        return True
    raise SettingsError(f"{name}={value!r} is not a boolean; use 1 or 0.")


def _secret(env: Mapping[str, str], name: str) -> str | None:
    # A console paste or `echo` into Secret Manager adds a newline: surrounding whitespace is
    # never part of a key. What is left is checked (without quoting it) by `validate`.
    return env.get(name, "").strip() or None


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    """A finite number; its range is checked by `Settings.validate` against `BOUNDS`."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw[:40]!r} is not a number.") from None
    if not math.isfinite(value):
        raise SettingsError(f"{name} must be a finite number, got {raw[:40]}.")
    return value


def _integer(env: Mapping[str, str], name: str, default: int) -> int:
    value = _number(env, name, default)
    if value != int(value):
        raise SettingsError(f"{name} must be a whole number, got {env[name]}.")
    return int(value)


def _agent_mode(raw: str) -> AgentMode:
    try:
        return AgentMode(raw.strip().upper())
    except ValueError:
        raise SettingsError(
            f"AGENT_MODE={raw!r} is unknown; use one of OFF, OBSERVE, PAPER, LIVE."
        ) from None
