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

    def check(self, intent: TradeIntent, *, broker_is_paper: bool) -> None:
        """Return if the broker call may go ahead, else raise the reason (mode or kill switch)."""
        ...


class TradingAuthority:
    """AGENT_MODE, then the environment, global and tenant kill switches."""

    def __init__(
        self, *, agent_mode: AgentMode, env_halted: bool, switches: KillSwitchSource
    ) -> None:
        self._agent_mode = agent_mode
        self._env_halted = env_halted
        self._switches = switches

    def check(self, intent: TradeIntent, *, broker_is_paper: bool) -> None:
        """Raise unless this intent may reach this broker now."""
        if self._agent_mode in (AgentMode.OFF, AgentMode.OBSERVE):
            raise AgentModeError(f"agent_mode_{self._agent_mode.value.lower()}")
        if self._agent_mode is AgentMode.PAPER and not broker_is_paper:
            raise AgentModeError("agent_mode_paper_forbids_live_broker")
        if self._env_halted:
            raise ExecutionHaltedError("kill_switch_env")
        engaged = self._switches.engaged(intent.tenant_id)
        if engaged is not None:
            raise ExecutionHaltedError(f"kill_switch_{engaged}")
