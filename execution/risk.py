"""Pre-trade risk: per-account limits, fail-closed unless `fail_open` is chosen.

The limits live on `tenants/{tenant_id}/accounts/{broker_account_id}`; the engine reads that
document once per invocation and hands it here. Counting limits (orders per day, net position)
read the service's own records of what it sent to the broker, never fills: a limit must hold
whether or not the broker has filled anything yet.

Limits that cannot be evaluated reject (`risk_data_unavailable`) unless `fail_open`, with one
exception: a store outage (the account unread, a count that timed out) raises
`StoreUnavailableError`, so the delivery is retried and the intent judged once the store answers,
instead of being rejected for good by a passing outage.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from execution.accounts import AccountRead
from execution.clock import Clock
from execution.errors import StoreUnavailableError
from execution.models import TradeIntent
from execution.telemetry import emit

logger = logging.getLogger(__name__)

UNAVAILABLE = "risk_data_unavailable"
_EPSILON = 1e-9


@dataclass(frozen=True)
class RiskDecision:
    """Whether the intent passes risk, and the named reason where it does not."""

    allowed: bool
    reason: str | None = None


class RiskGate(Protocol):
    """The risk stage's port."""

    def validate(
        self, intent: TradeIntent, amount_usd: float, account: AccountRead
    ) -> RiskDecision:
        """Judge `intent` (worth `amount_usd`) against `account`'s limits."""
        ...


class OrderHistory(Protocol):
    """What this service has sent to the broker, counted from its own records."""

    def orders_today(
        self, tenant_id: str, broker_account_id: str, *, since: datetime, now: datetime
    ) -> int:
        """Orders placed since `since`, plus intents in flight now (the asking one included).

        Raises `StoreUnavailableError`.
        """
        ...

    def net_position(self, tenant_id: str, broker_account_id: str, symbol: str) -> float:
        """Quantity bought minus quantity sold in placed orders of `symbol`.

        Raises `StoreUnavailableError`.
        """
        ...


class RiskManager:
    """Limits from the account document; unreadable data rejects unless `fail_open`.

    Without an account document an intent has no limits, unless `require_account`: then it is
    rejected (`account_unknown`), so a mistyped account id cannot trade unlimited.
    """

    def __init__(
        self,
        history: OrderHistory,
        *,
        clock: Clock,
        fail_open: bool = False,
        require_account: bool = False,
    ) -> None:
        self._history = history
        self._clock = clock
        self._fail_open = fail_open
        self._require_account = require_account

    def validate(
        self, intent: TradeIntent, amount_usd: float, account: AccountRead
    ) -> RiskDecision:
        """Reject what breaks a limit; see the module docstring for unreadable data."""
        if account.error is not None:
            if account.outage is not None and not self._fail_open:
                raise account.outage
            return self._unavailable(intent, account.error)
        limits = account.settings
        if limits is None:
            if self._require_account:
                return RiskDecision(
                    False,
                    f"account_unknown: no tenants/{intent.tenant_id}/accounts/"
                    f"{intent.broker_account_id} (REQUIRE_ACCOUNT_DOCUMENT=1)",
                )
            return RiskDecision(True)
        if limits.allowed_symbols is not None and intent.symbol not in limits.allowed_symbols:
            return RiskDecision(False, f"symbol_not_allowed: {intent.symbol}")
        if intent.symbol in limits.denied_symbols:
            return RiskDecision(False, f"symbol_denied: {intent.symbol}")
        cap = limits.max_order_notional_usd
        if cap is not None and amount_usd > cap:
            return RiskDecision(False, f"max_order_notional_exceeded: {amount_usd:g} > {cap:g} USD")
        try:
            if limits.max_daily_orders is not None:
                decision = self._daily_orders(intent, limits.max_daily_orders)
                if not decision.allowed:
                    return decision
            if limits.max_position_qty is not None:
                return self._position(intent, limits.max_position_qty)
        except StoreUnavailableError as exc:
            if not self._fail_open:
                raise
            return self._unavailable(intent, repr(exc))
        except Exception as exc:  # a limit that cannot be counted is a limit unknown
            return self._unavailable(intent, repr(exc))
        return RiskDecision(True)

    def _daily_orders(self, intent: TradeIntent, limit: int) -> RiskDecision:
        now = self._clock()
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        counted = self._history.orders_today(
            intent.tenant_id, intent.broker_account_id, since=midnight, now=now
        )
        if counted > limit:  # `counted` includes this intent's own live reservation
            return RiskDecision(
                False, f"max_daily_orders_reached: {counted - 1} of {limit} used today (UTC)"
            )
        return RiskDecision(True)

    def _position(self, intent: TradeIntent, limit: float) -> RiskDecision:
        held = self._history.net_position(intent.tenant_id, intent.broker_account_id, intent.symbol)
        after = held + intent.qty if intent.side == "buy" else held - intent.qty
        # An order that shrinks the position is always allowed, even above the limit.
        if abs(after) > limit + _EPSILON and abs(after) > abs(held):
            return RiskDecision(False, f"max_position_exceeded: {after:g} > {limit:g}")
        return RiskDecision(True)

    def _unavailable(self, intent: TradeIntent, error: str) -> RiskDecision:
        emit(
            logger,
            "exec.risk.data_unavailable",
            logging.WARNING,
            client_intent_id=intent.client_intent_id,
            fail_open=self._fail_open,
            error=error,
        )
        return RiskDecision(self._fail_open, UNAVAILABLE)
