"""Freshness: whether an intent is too old to execute, whoever's clock is wrong.

An intent carries up to two birth times: `created_at`, from the publisher's clock, and the
publish time, from Pub/Sub's. Its age is measured from the earlier of the two, so a publisher
clock running fast cannot make an old message look young; and a `created_at` later than the
publish time (or than now) by more than `MAX_CLOCK_SKEW_SECONDS` is refused outright, since the
intent then claims to have been written after it was sent::

      created_at    published_at                     now
    ------|--------------|----------------------------|------>
          |<------------------ age ------------------>|   stale when age > max age
                         |<- skew ->|
                         created_at may not be later than this

Both checks end the intent `stale`: it is recorded and never executed, late or early.
"""

from __future__ import annotations

from datetime import datetime, timedelta

MAX_CLOCK_SKEW_SECONDS = 30.0
"""How far a publisher's clock may run ahead of Pub/Sub's (or ours) before we disbelieve it."""


def stale_reason(
    *,
    created_at: datetime | None,
    published_at: datetime | None,
    now: datetime,
    max_age_seconds: float,
    max_skew_seconds: float = MAX_CLOCK_SKEW_SECONDS,
) -> str | None:
    """Why an intent born at these times must not execute at `now`; None when it is fresh."""
    skew = timedelta(seconds=max_skew_seconds)
    if published_at is not None and published_at > now + skew:
        ahead = (published_at - now).total_seconds()
        return f"intent_from_the_future: published {ahead:.0f}s from now"
    latest_birth = min(now, published_at or now) + skew
    if created_at is not None and created_at > latest_birth:
        ahead = (created_at - min(now, published_at or now)).total_seconds()
        reference = "its publish time" if published_at is not None else "now"
        return (
            f"intent_from_the_future: created_at {ahead:.0f}s after {reference} "
            f"(clock skew allowed: {max_skew_seconds:g}s)"
        )
    known = [born for born in (created_at, published_at) if born is not None]
    if not known:
        return None
    age = (now - min(known)).total_seconds()
    if age <= max_age_seconds:
        return None
    return f"intent_stale: {age:.0f}s old > INTENT_MAX_AGE_SECONDS={max_age_seconds:g}"
