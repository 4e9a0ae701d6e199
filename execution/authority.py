"""Trading authority: the agent mode and the kill switches, checked right before the broker."""

from __future__ import annotations

from typing import Protocol

from execution.errors import AgentModeError, ExecutionHaltedError
from execution.models import TradeIntent
from execution.settings import AgentMode


class KillSwitchSource(Protocol):
    """Reads the kill-switch documents."""

    def engaged(self, tenant_id: str) -> str | None:
        """Which switch halts `tenant_id` (`global` or `tenant`), or None.

        Raises `StoreUnavailableError` where the store cannot answer: never guess "off".
        """
        ...


class Authority(Protocol):
    """The authority stage's port."""

    def check_mode(self, *, broker_is_paper: bool, account_mode: AgentMode | None = None) -> None:
        """Raise `AgentModeError` unless the trading mode lets this broker be reached at all.

        Asked before any broker call, lookups included: OFF and OBSERVE never touch a broker.
        """
        ...

    def check(
        self,
        intent: TradeIntent,
        *,
        broker_is_paper: bool,
        switches: KillSwitchSource,
        account_mode: AgentMode | None = None,
    ) -> None:
        """Return if the broker call may go ahead, else raise the reason (mode or kill switch).

        `switches` is the invocation's view of the kill switches; `account_mode` is the account's
        own `trading_mode`, and the stricter of it and AGENT_MODE applies.
        """
        ...


_STRICTNESS = [AgentMode.OFF, AgentMode.OBSERVE, AgentMode.PAPER, AgentMode.LIVE]


class TradingAuthority:
    """The trading mode (AGENT_MODE narrowed by the account's), then every kill switch."""

    def __init__(self, *, agent_mode: AgentMode, env_halted: bool) -> None:
        self._agent_mode = agent_mode
        self._env_halted = env_halted

    def check(
        self,
        intent: TradeIntent,
        *,
        broker_is_paper: bool,
        switches: KillSwitchSource,
        account_mode: AgentMode | None = None,
    ) -> None:
        """Raise unless this intent may reach this broker now."""
        self.check_mode(broker_is_paper=broker_is_paper, account_mode=account_mode)
        if self._env_halted:
            raise ExecutionHaltedError("kill_switch_env")
        engaged = switches.engaged(intent.tenant_id)
        if engaged is not None:
            raise ExecutionHaltedError(f"kill_switch_{engaged}")

    def check_mode(self, *, broker_is_paper: bool, account_mode: AgentMode | None = None) -> None:
        """Raise `AgentModeError` unless AGENT_MODE (narrowed by the account's) allows it."""
        mode, source = self._agent_mode, "agent_mode"
        if account_mode is not None and _STRICTNESS.index(account_mode) < _STRICTNESS.index(mode):
            mode, source = account_mode, "account_mode"
        if mode in (AgentMode.OFF, AgentMode.OBSERVE):
            raise AgentModeError(f"{source}_{mode.value.lower()}")
        if mode is AgentMode.PAPER and not broker_is_paper:
            raise AgentModeError(f"{source}_paper_forbids_live_broker")
