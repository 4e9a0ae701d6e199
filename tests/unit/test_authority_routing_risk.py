"""The three gates before the broker: trading authority, the quote gate and pre-trade risk."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from execution.accounts import AccountRead, AccountSettings
from execution.authority import TradingAuthority
from execution.clock import FakeClock
from execution.errors import AgentModeError, ExecutionHaltedError, StoreUnavailableError
from execution.models import TradeIntent
from execution.risk import RiskDecision, RiskManager
from execution.routing import Quote, QuoteGate, RouteDecision
from execution.settings import AgentMode
from tests.unit.fakes import T0, FakeKillSwitches, logged, make_intent, make_quote

# --- TradingAuthority ----------------------------------------------------------------------


@dataclass(frozen=True)
class Gate:
    """A `TradingAuthority` and the kill switches every check of it is given."""

    authority: TradingAuthority
    switches: FakeKillSwitches

    def check(self, intent: TradeIntent, **kwargs: Any) -> None:
        self.authority.check(intent, switches=self.switches, **kwargs)


def authority(
    mode: AgentMode = AgentMode.LIVE,
    *,
    env_halted: bool = False,
    switches: FakeKillSwitches | None = None,
) -> Gate:
    return Gate(
        TradingAuthority(agent_mode=mode, env_halted=env_halted),
        switches or FakeKillSwitches(),
    )


@pytest.mark.parametrize("mode", [AgentMode.OFF, AgentMode.OBSERVE])
@pytest.mark.parametrize("paper", [True, False])
def test_off_and_observe_never_reach_any_broker(mode: AgentMode, paper: bool) -> None:
    with pytest.raises(AgentModeError) as raised:
        authority(mode).check(make_intent(), broker_is_paper=paper)

    assert str(raised.value) == f"agent_mode_{mode.value.lower()}"


def test_paper_mode_allows_a_paper_broker() -> None:
    authority(AgentMode.PAPER).check(make_intent(), broker_is_paper=True)


def test_paper_mode_forbids_a_live_broker() -> None:
    with pytest.raises(AgentModeError) as raised:
        authority(AgentMode.PAPER).check(make_intent(), broker_is_paper=False)

    assert str(raised.value) == "agent_mode_paper_forbids_live_broker"


@pytest.mark.parametrize("paper", [True, False])
def test_live_mode_allows_any_broker(paper: bool) -> None:
    authority(AgentMode.LIVE).check(make_intent(), broker_is_paper=paper)


def test_the_environment_halt_stops_execution() -> None:
    with pytest.raises(ExecutionHaltedError) as raised:
        authority(env_halted=True).check(make_intent(), broker_is_paper=True)

    assert str(raised.value) == "kill_switch_env"


def test_the_global_kill_switch_stops_execution() -> None:
    with pytest.raises(ExecutionHaltedError) as raised:
        authority(switches=FakeKillSwitches(global_on=True)).check(
            make_intent(), broker_is_paper=True
        )

    assert str(raised.value) == "kill_switch_global"


def test_the_tenant_kill_switch_stops_that_tenant() -> None:
    gate = authority(switches=FakeKillSwitches(tenants={"tenant-a"}))

    with pytest.raises(ExecutionHaltedError) as raised:
        gate.check(make_intent(tenant_id="tenant-a"), broker_is_paper=True)

    assert str(raised.value) == "kill_switch_tenant"


def test_the_tenant_kill_switch_leaves_other_tenants_trading() -> None:
    gate = authority(switches=FakeKillSwitches(tenants={"tenant-a"}))

    gate.check(make_intent(tenant_id="tenant-b"), broker_is_paper=True)


def test_an_unreadable_kill_switch_propagates_and_is_never_guessed_off() -> None:
    outage = StoreUnavailableError("switch read timed out")
    gate = authority(switches=FakeKillSwitches(error=outage))

    with pytest.raises(StoreUnavailableError) as raised:
        gate.check(make_intent(), broker_is_paper=True)

    assert raised.value is outage


def test_the_agent_mode_is_checked_before_the_switches_are_read() -> None:
    gate = authority(AgentMode.OFF, switches=FakeKillSwitches(error=StoreUnavailableError("x")))

    with pytest.raises(AgentModeError):
        gate.check(make_intent(), broker_is_paper=True)


# --- QuoteGate ---------------------------------------------------------------------------


def router(*, strict: bool = False, clock: FakeClock | None = None) -> QuoteGate:
    return QuoteGate(
        clock=clock or FakeClock(T0), max_spread_bps=50, quote_max_age_seconds=60, strict=strict
    )


def test_a_fresh_narrow_quote_is_allowed() -> None:
    assert router().route(make_intent(), make_quote()) == RouteDecision(True)


def test_a_wide_spread_is_denied() -> None:
    decision = router().route(make_intent(), make_quote(bid=99.0, ask=101.0))  # ~200 bps

    assert decision.allowed is False
    assert decision.reason is not None and decision.reason.startswith("spread_too_wide")


def test_a_spread_exactly_at_the_limit_is_allowed() -> None:
    quote = Quote(symbol="AAPL", bid=99.75, ask=100.25, ts=T0)  # 50 bps of a 100 mid

    assert router().route(make_intent(), quote).allowed is True


@pytest.mark.parametrize(
    ("bid", "ask"),
    [
        (0.0, 0.0),
        (math.nan, 100.0),
        (99.0, math.inf),
        (-1.0, 100.0),
        (101.0, 100.0),  # crossed
        (1e10, 1e10),  # above MAX_QUOTE_PRICE: qty x price could overflow
    ],
)
def test_a_quote_that_cannot_price_an_order_cannot_be_built(bid: float, ask: float) -> None:
    with pytest.raises(ValueError) as raised:
        make_quote(bid=bid, ask=ask)

    assert "quote for AAPL" in str(raised.value)


def test_a_stale_quote_is_denied() -> None:
    decision = router().route(make_intent(), make_quote(ts=T0 - timedelta(seconds=61)))

    assert decision.allowed is False
    assert decision.reason == "quote_stale: 61s old"


def test_a_quote_exactly_at_the_max_age_is_allowed() -> None:
    assert router().route(make_intent(), make_quote(ts=T0 - timedelta(seconds=60))).allowed


def test_a_missing_quote_is_allowed_and_says_so() -> None:
    assert router().route(make_intent(), None) == RouteDecision(True, "quote_unavailable")


def test_a_missing_quote_is_denied_when_strict() -> None:
    assert router(strict=True).route(make_intent(), None) == RouteDecision(
        False, "quote_unavailable"
    )


def test_quote_prices_are_the_ask_for_a_buy_and_the_bid_for_a_sell() -> None:
    quote = make_quote(bid=99.0, ask=101.0)

    assert (quote.price_for("buy"), quote.price_for("sell"), quote.mid) == (101.0, 99.0, 100.0)


# --- RiskManager ---------------------------------------------------------------------------


def risk(*, fail_open: bool = False, require_account: bool = False) -> RiskManager:
    return RiskManager(fail_open=fail_open, require_account=require_account)


def limits(**fields: object) -> AccountRead:
    return AccountRead(AccountSettings.model_validate(fields))


def test_an_account_without_settings_has_no_limits() -> None:
    assert risk().validate(make_intent(), 1e9, AccountRead(None)) == RiskDecision(True)


def test_an_account_without_a_document_is_unknown_when_accounts_are_required() -> None:
    decision = risk(require_account=True).validate(
        make_intent(tenant_id="acme", broker_account_id="acct-typo"), 1, AccountRead(None)
    )

    assert decision.allowed is False
    assert decision.reason == (
        "account_unknown: no tenants/acme/accounts/acct-typo (REQUIRE_ACCOUNT_DOCUMENT=1)"
    )


def test_a_required_account_that_exists_is_judged_by_its_limits() -> None:
    gate = risk(require_account=True)

    assert gate.validate(make_intent(), 1, limits()).allowed is True
    assert gate.validate(make_intent(), 1e9, limits(max_order_notional_usd=10)).allowed is False


def test_an_order_within_the_notional_limit_is_allowed() -> None:
    decision = risk().validate(make_intent(), 1000, limits(max_order_notional_usd=1000))

    assert decision.allowed is True


def test_an_order_over_the_notional_limit_is_rejected() -> None:
    decision = risk().validate(make_intent(), 1000.01, limits(max_order_notional_usd=1000))

    assert decision.allowed is False
    assert decision.reason is not None
    assert decision.reason.startswith("max_order_notional_exceeded")


def test_a_symbol_outside_the_allowed_list_is_rejected() -> None:
    decision = risk().validate(make_intent(symbol="AAPL"), 1, limits(allowed_symbols=["MSFT"]))

    assert decision == RiskDecision(False, "symbol_not_allowed: AAPL")


def test_a_symbol_on_the_allowed_list_is_allowed() -> None:
    account = limits(allowed_symbols=["AAPL", "MSFT"])

    assert risk().validate(make_intent(symbol="AAPL"), 1, account).allowed is True


def test_an_empty_allowed_list_allows_nothing() -> None:
    assert risk().validate(make_intent(), 1, limits(allowed_symbols=[])).allowed is False


def test_a_denied_symbol_is_rejected() -> None:
    decision = risk().validate(make_intent(symbol="AAPL"), 1, limits(denied_symbols=["AAPL"]))

    assert decision == RiskDecision(False, "symbol_denied: AAPL")


def test_unreadable_risk_data_rejects_by_default() -> None:
    decision = risk().validate(make_intent(), 1, AccountRead(error="accounts down"))

    assert decision == RiskDecision(False, "risk_data_unavailable")


def test_unreadable_risk_data_passes_when_configured_fail_open() -> None:
    decision = risk(fail_open=True).validate(make_intent(), 1, AccountRead(error="accounts down"))

    assert decision == RiskDecision(True, "risk_data_unavailable")


def test_an_account_the_store_could_not_read_retries_rather_than_rejects() -> None:
    outage = StoreUnavailableError("accounts down")

    with pytest.raises(StoreUnavailableError) as raised:
        risk().validate(make_intent(), 1, AccountRead(error="accounts down", outage=outage))

    assert raised.value is outage


def test_an_account_the_store_could_not_read_passes_when_configured_fail_open() -> None:
    read = AccountRead(error="accounts down", outage=StoreUnavailableError("accounts down"))

    decision = risk(fail_open=True).validate(make_intent(), 1, read)

    assert decision == RiskDecision(True, "risk_data_unavailable")


def test_unreadable_risk_data_is_logged_with_the_fail_open_choice(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)

    risk().validate(make_intent(), 1, AccountRead(error="accounts down"))

    assert [f["fail_open"] for f in logged(caplog.records, "exec.risk.data_unavailable")] == [False]


@pytest.mark.parametrize(
    ("agent", "account", "reason"),
    [
        (AgentMode.LIVE, AgentMode.OFF, "account_mode_off"),
        (AgentMode.LIVE, AgentMode.OBSERVE, "account_mode_observe"),
        (AgentMode.OFF, AgentMode.LIVE, "agent_mode_off"),
    ],
)
def test_the_stricter_of_agent_and_account_mode_applies(
    agent: AgentMode, account: AgentMode, reason: str
) -> None:
    with pytest.raises(AgentModeError) as raised:
        authority(agent).check(make_intent(), broker_is_paper=True, account_mode=account)

    assert str(raised.value) == reason


def test_an_account_in_paper_mode_keeps_a_live_broker_away_under_live_agent_mode() -> None:
    with pytest.raises(AgentModeError) as raised:
        authority(AgentMode.LIVE).check(
            make_intent(), broker_is_paper=False, account_mode=AgentMode.PAPER
        )

    assert str(raised.value) == "account_mode_paper_forbids_live_broker"


def test_a_more_permissive_account_mode_cannot_widen_agent_mode() -> None:
    with pytest.raises(AgentModeError):
        authority(AgentMode.PAPER).check(
            make_intent(), broker_is_paper=False, account_mode=AgentMode.LIVE
        )
