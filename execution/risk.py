"""Pre-trade risk: per-account limits, fail-closed unless `fail_open` is chosen.

The limits live on `tenants/{tenant_id}/accounts/{broker_account_id}`; the engine reads that
document once per invocation and hands it here. This stage judges the order alone (symbol lists,
the order notional cap on the amount reserved); the limits that count what the account holds
(in-flight budget, orders per day, net position) are decided at acquire, in the same commit as
the reservation, so two concurrent intents can never both pass them (`execution.account_state`).

Limits that cannot be evaluated reject (`risk_data_unavailable`) unless `fail_open`, with one
exception: a store outage (the account unread) raises `StoreUnavailableError`, so the delivery is
retried and the intent judged once the store answers, instead of being rejected for good by a
passing outage.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from execution.accounts import AccountRead
from execution.models import TradeIntent
from execution.telemetry import emit

logger = logging.getLogger(__name__)

UNAVAILABLE = "risk_data_unavailable"


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


class RiskManager:
    """Limits from the account document; unreadable data rejects unless `fail_open`.

    Without an account document an intent has no limits, unless `require_account`: then it is
    rejected (`account_unknown`), so a mistyped account id cannot trade unlimited.
    """

    def __init__(self, *, fail_open: bool = False, require_account: bool = False) -> None:
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
