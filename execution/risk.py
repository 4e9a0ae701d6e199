"""Pre-trade risk: per-account limits, fail-closed unless `fail_open` is chosen."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from execution.accounts import AccountSource
from execution.models import TradeIntent
from execution.telemetry import emit

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RiskDecision:
    """Whether the intent passes risk, and the named reason where it does not."""

    allowed: bool
    reason: str | None = None


class RiskGate(Protocol):
    """The risk stage's port."""

    def validate(self, intent: TradeIntent, amount_usd: float) -> RiskDecision:
        """Judge `intent` (worth `amount_usd`) against the account's limits."""
        ...


class RiskManager:
    """Limits from the account document; unreadable data rejects unless `fail_open`."""

    def __init__(self, accounts: AccountSource, *, fail_open: bool = False) -> None:
        self._accounts = accounts
        self._fail_open = fail_open

    def validate(self, intent: TradeIntent, amount_usd: float) -> RiskDecision:
        """Reject what breaks a limit; see the module docstring for unreadable data."""
        try:
            account = self._accounts.get(intent.tenant_id, intent.broker_account_id)
        except Exception as exc:  # any failure to read limits is "limits unknown"
            emit(
                logger,
                "exec.risk.data_unavailable",
                logging.WARNING,
                client_intent_id=intent.client_intent_id,
                fail_open=self._fail_open,
                error=repr(exc),
            )
            if self._fail_open:
                return RiskDecision(True, "risk_data_unavailable")
            return RiskDecision(False, "risk_data_unavailable")
        if account is None:
            return RiskDecision(True)
        if account.allowed_symbols is not None and intent.symbol not in account.allowed_symbols:
            return RiskDecision(False, f"symbol_not_allowed: {intent.symbol}")
        if intent.symbol in account.denied_symbols:
            return RiskDecision(False, f"symbol_denied: {intent.symbol}")
        limit = account.max_order_notional_usd
        if limit is not None and amount_usd > limit:
            return RiskDecision(
                False, f"max_order_notional_exceeded: {amount_usd:g} > {limit:g} USD"
            )
        return RiskDecision(True)
