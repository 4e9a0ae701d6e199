"""Settings from the environment: safe defaults, and refusals that name the variable to fix."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import main
from execution.brokers.paper import PaperBroker
from execution.errors import SettingsError
from execution.settings import ALPACA_PAPER_URL, BOUNDS, AgentMode, Settings, alpaca_url_is_paper

LIVE_URL = "https://api.alpaca.markets"
ALPACA_KEYS = {"BROKER": "alpaca", "APCA_API_KEY_ID": "key", "APCA_API_SECRET_KEY": "secret"}


def test_the_defaults_are_paper_broker_paper_mode_not_halted_not_dry_run() -> None:
    settings = Settings.from_env({})

    assert (
        settings.broker,
        settings.agent_mode,
        settings.execution_halted,
        settings.execution_dry_run,
    ) == ("paper", AgentMode.PAPER, False, False)


def test_the_default_timeout_is_540_and_the_ttl_is_timeout_plus_60() -> None:
    settings = Settings.from_env({})

    assert (settings.function_timeout_seconds, settings.reservation_ttl_seconds) == (540.0, 600.0)


def test_the_default_ttl_follows_a_configured_timeout() -> None:
    settings = Settings.from_env({"FUNCTION_TIMEOUT_SECONDS": "120"})

    assert settings.reservation_ttl_seconds == 180.0


def test_the_default_topic_is_trade_intents() -> None:
    assert Settings.from_env({}).intent_topic == "trade-intents"


def test_the_default_risk_is_fail_closed_and_routing_lenient() -> None:
    settings = Settings.from_env({})

    assert (settings.risk_fail_open, settings.router_strict) == (False, False)


def test_the_constructor_defaults_match_the_environment_defaults() -> None:
    assert Settings() == Settings.from_env({})


def test_the_project_is_read_from_google_cloud_project() -> None:
    assert Settings.from_env({"GOOGLE_CLOUD_PROJECT": "demo-x"}).project == "demo-x"


def test_an_explicit_ttl_above_the_timeout_is_kept() -> None:
    env = {"FUNCTION_TIMEOUT_SECONDS": "60", "RESERVATION_TTL_SECONDS": "61"}

    settings = Settings.from_env(env)

    assert settings.reservation_ttl_seconds == 61.0


@pytest.mark.parametrize("ttl", ["540", "300"])
def test_a_ttl_not_above_the_timeout_is_refused_naming_the_variable(ttl: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"RESERVATION_TTL_SECONDS": ttl})

    assert "RESERVATION_TTL_SECONDS" in str(raised.value)
    assert "FUNCTION_TIMEOUT_SECONDS" in str(raised.value)


def test_a_ttl_not_above_the_timeout_is_refused_by_the_constructor_too() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings(function_timeout_seconds=60, reservation_ttl_seconds=60)

    assert "RESERVATION_TTL_SECONDS" in str(raised.value)


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("1", True),
        ("true", True),
        ("YES", True),
        (" on ", True),
        ("0", False),
        ("false", False),
        ("no", False),
        ("off", False),
        ("", False),
    ],
)
def test_boolean_flags_accept_the_usual_spellings(raw: str, expected: bool) -> None:
    assert Settings.from_env({"EXECUTION_HALTED": raw}).execution_halted is expected


@pytest.mark.parametrize(
    "name", ["EXECUTION_HALTED", "EXECUTION_DRY_RUN", "RISK_FAIL_OPEN", "ROUTER_STRICT"]
)
def test_a_flag_that_is_not_a_boolean_is_refused_naming_the_variable(name: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({name: "maybe"})

    assert f"{name} is not a boolean" in str(raised.value)
    assert "maybe" not in str(raised.value)


@pytest.mark.parametrize(
    "name",
    [
        "FUNCTION_TIMEOUT_SECONDS",
        "RESERVATION_TTL_SECONDS",
        "INTENT_MAX_AGE_SECONDS",
        "ROUTER_MAX_SPREAD_BPS",
    ],
)
def test_a_number_that_does_not_parse_is_refused_naming_the_variable(name: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({name: "ten"})

    assert f"{name} is not a number" in str(raised.value)
    assert "ten" not in str(raised.value)


@pytest.mark.parametrize("raw", ["0", "-5"])
def test_a_number_that_is_not_positive_is_refused_naming_the_variable(raw: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"INTENT_MAX_AGE_SECONDS": raw})

    assert "INTENT_MAX_AGE_SECONDS must be above 0 and at most 86400 seconds" in str(raised.value)


def test_account_documents_are_optional_unless_required() -> None:
    assert Settings.from_env({}).require_account_document is False
    assert Settings.from_env({"REQUIRE_ACCOUNT_DOCUMENT": "1"}).require_account_document is True


def test_shared_reads_last_a_second_by_default_and_zero_turns_them_off() -> None:
    assert Settings.from_env({}).shared_read_max_age_seconds == 1.0
    assert Settings.from_env({"SHARED_READ_MAX_AGE_SECONDS": "0"}).shared_read_max_age_seconds == 0


@pytest.mark.parametrize("raw", ["-1", "61"])
def test_a_shared_read_bound_outside_zero_to_a_minute_is_refused(raw: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"SHARED_READ_MAX_AGE_SECONDS": raw})

    assert "SHARED_READ_MAX_AGE_SECONDS" in str(raised.value)


@pytest.mark.parametrize(
    "raw,mode",
    [
        ("off", AgentMode.OFF),
        ("Observe", AgentMode.OBSERVE),
        (" paper ", AgentMode.PAPER),
        ("LIVE", AgentMode.LIVE),
    ],
)
def test_agent_modes_are_read_case_insensitively(raw: str, mode: AgentMode) -> None:
    assert Settings.from_env({"AGENT_MODE": raw}).agent_mode is mode


def test_an_unknown_agent_mode_is_refused_listing_the_valid_ones() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"AGENT_MODE": "YOLO"})

    assert "AGENT_MODE is unknown" in str(raised.value) and "YOLO" not in str(raised.value)
    assert "OFF, OBSERVE, PAPER, LIVE" in str(raised.value)


def test_an_unknown_broker_is_refused() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"BROKER": "ibkr"})

    assert "BROKER is unknown" in str(raised.value)
    assert "ibkr" not in str(raised.value)


def test_alpaca_without_keys_is_refused_naming_both_variables() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"BROKER": "alpaca"})

    assert "APCA_API_KEY_ID" in str(raised.value)
    assert "APCA_API_SECRET_KEY" in str(raised.value)


def test_alpaca_with_only_one_key_is_refused() -> None:
    with pytest.raises(SettingsError):
        Settings.from_env({"BROKER": "alpaca", "APCA_API_KEY_ID": "key"})


def test_alpaca_with_keys_defaults_to_the_paper_url() -> None:
    settings = Settings.from_env(ALPACA_KEYS)

    assert (settings.alpaca_base_url, alpaca_url_is_paper(settings.alpaca_base_url)) == (
        ALPACA_PAPER_URL,
        True,
    )


def test_live_mode_with_the_paper_url_is_refused() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({**ALPACA_KEYS, "AGENT_MODE": "LIVE"})

    assert "AGENT_MODE=LIVE with Alpaca's paper URL" in str(raised.value)


def test_paper_mode_with_the_live_url_is_refused() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({**ALPACA_KEYS, "APCA_API_BASE_URL": LIVE_URL})

    assert "AGENT_MODE=PAPER" in str(raised.value)
    assert "would trade live" in str(raised.value)


def test_live_mode_with_the_live_url_is_accepted_and_not_paper() -> None:
    env = {**ALPACA_KEYS, "AGENT_MODE": "LIVE", "APCA_API_BASE_URL": LIVE_URL}

    settings = Settings.from_env(env)

    assert alpaca_url_is_paper(settings.alpaca_base_url) is False


def test_a_trailing_slash_on_the_alpaca_url_is_dropped() -> None:
    settings = Settings.from_env({**ALPACA_KEYS, "APCA_API_BASE_URL": ALPACA_PAPER_URL + "/"})

    assert settings.alpaca_base_url == ALPACA_PAPER_URL


def test_the_paper_broker_is_paper_whatever_the_alpaca_url() -> None:
    settings = Settings.from_env({"APCA_API_BASE_URL": LIVE_URL})

    # Accepted in PAPER mode: the broker the engine asks (`Broker.is_paper`) is the paper one.
    assert (settings.broker, settings.agent_mode, PaperBroker.is_paper) == (
        "paper",
        AgentMode.PAPER,
        True,
    )


def test_settings_are_immutable() -> None:
    settings = Settings()

    with pytest.raises(AttributeError):
        settings.execution_halted = True  # type: ignore[misc]

    assert settings.execution_halted is False


def test_reservation_max_attempts_below_one_is_refused() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings(reservation_max_attempts=0)

    assert "RESERVATION_MAX_ATTEMPTS" in str(raised.value)


def test_an_empty_agent_mode_means_the_default() -> None:
    assert Settings.from_env({"AGENT_MODE": ""}).agent_mode is AgentMode.PAPER


def test_a_fractional_attempt_count_is_refused_naming_the_variable() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"RESERVATION_MAX_ATTEMPTS": "2.5"})

    assert "RESERVATION_MAX_ATTEMPTS" in str(raised.value)


def test_the_broker_timeout_defaults_to_ten_seconds_or_half_a_short_function_timeout() -> None:
    assert Settings.from_env({}).broker_timeout_seconds == 10.0
    assert Settings.from_env({"FUNCTION_TIMEOUT_SECONDS": "4"}).broker_timeout_seconds == 2.0


def test_a_broker_timeout_not_below_the_function_timeout_is_refused_naming_both() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"FUNCTION_TIMEOUT_SECONDS": "30", "BROKER_TIMEOUT_SECONDS": "30"})

    assert "BROKER_TIMEOUT_SECONDS" in str(raised.value)
    assert "FUNCTION_TIMEOUT_SECONDS" in str(raised.value)


def test_only_alpacas_paper_host_counts_as_paper() -> None:
    assert alpaca_url_is_paper("https://paper-api.alpaca.markets")
    assert not alpaca_url_is_paper("https://paper-api.alpaca.markets.evil.example")
    assert not alpaca_url_is_paper("https://api.alpaca.markets/paper-api")


@pytest.mark.parametrize("name", ["FUNCTION_TIMEOUT_SECONDS", "RESERVATION_TTL_SECONDS"])
def test_a_number_that_is_not_finite_is_refused_naming_the_variable(name: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({name: "nan"})

    assert name in str(raised.value)


def test_a_function_timeout_above_what_an_event_function_may_run_is_refused() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"FUNCTION_TIMEOUT_SECONDS": "600"})

    assert "540" in str(raised.value)


def test_a_retention_shorter_than_the_redelivery_window_is_refused() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"RESERVATION_RETENTION_DAYS": "1"})

    assert "RESERVATION_RETENTION_DAYS" in str(raised.value)


# --- every number has an upper bound, checked at start-up ---------------------------------


def above_the_bound(name: str) -> str:
    """A value just past `name`'s upper bound (a whole number where the setting counts)."""
    return f"{int(BOUNDS[name].high) + 1}"


@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_a_number_above_its_bound_is_refused_naming_the_variable_and_the_range(
    name: str,
) -> None:
    bound = BOUNDS[name]

    with pytest.raises(SettingsError) as raised:
        Settings.from_env({bound.variable: above_the_bound(name)})

    assert f"{bound.variable} must be {bound.describe()}" in str(raised.value)


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("RESERVATION_TTL_SECONDS", "1e12"),
        ("RESERVATION_RETENTION_DAYS", "3e6"),
        ("RESERVATION_RETENTION_DAYS", "1e9"),
        ("RESERVATION_MAX_ATTEMPTS", "1e300"),
        ("BROKER_TIMEOUT_SECONDS", "1e300"),
    ],
)
def test_values_that_overflowed_at_run_time_are_refused_at_start_up(
    variable: str, raw: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({variable: raw})

    assert variable in str(raised.value)
    assert "at most" in str(raised.value)


def test_the_constructor_refuses_a_value_above_its_bound_too() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings(reservation_retention_days=1e9)

    assert "RESERVATION_RETENTION_DAYS must be at least 2 and at most 3650 days" in str(
        raised.value
    )


def test_the_constructor_refuses_nan() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings(router_max_spread_bps=float("nan"))

    assert "ROUTER_MAX_SPREAD_BPS" in str(raised.value)


def test_every_upper_bound_itself_is_accepted_and_its_timestamps_fit() -> None:
    settings = Settings(**{name: bound.high for name, bound in BOUNDS.items()})

    far = datetime(2100, 1, 1, tzinfo=UTC)
    assert far + settings.reservation_retention + timedelta(
        seconds=settings.reservation_ttl_seconds
    ) < datetime.max.replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("variable", "raw"),
    [("RESERVATION_TTL_SECONDS", "1e12"), ("RESERVATION_RETENTION_DAYS", "1e9")],
)
def test_the_instance_start_up_refuses_an_out_of_range_setting(
    monkeypatch: pytest.MonkeyPatch, variable: str, raw: str
) -> None:
    monkeypatch.setenv(variable, raw)
    monkeypatch.setattr(main, "_service", None)
    # The JSON log handler would outlive this test; the start-up under test is the bootstrap.
    monkeypatch.setattr(main, "configure_logging", lambda: None)

    with pytest.raises(SettingsError) as raised:
        main._get_service()

    assert variable in str(raised.value)
    assert main._service is None


# --- broker keys ---------------------------------------------------------------------------


@pytest.mark.parametrize("padding", ["\n", "\r\n", " ", "\t", " \n "])
def test_broker_keys_are_stripped_of_surrounding_whitespace(padding: str) -> None:
    env = {
        **ALPACA_KEYS,
        "APCA_API_KEY_ID": f"{padding}key{padding}",
        "APCA_API_SECRET_KEY": f"secret{padding}",
    }

    settings = Settings.from_env(env)

    assert (settings.alpaca_key_id, settings.alpaca_secret_key) == ("key", "secret")


@pytest.mark.parametrize("variable", ["APCA_API_KEY_ID", "APCA_API_SECRET_KEY"])
@pytest.mark.parametrize("bad", ["in side", "ctl\x00char", "new\nline", "tab\tbed", "n\u00e9e"])
def test_a_broker_key_with_an_inner_space_or_control_character_is_refused_unquoted(
    variable: str, bad: str
) -> None:
    secret = f"PK{bad}SECRETVALUE"

    with pytest.raises(SettingsError) as raised:
        Settings.from_env({**ALPACA_KEYS, variable: secret})

    assert variable in str(raised.value)
    assert "SECRETVALUE" not in str(raised.value)
    assert "SECRETVALUE" not in repr(raised.value)


def test_the_settings_repr_shows_neither_key() -> None:
    settings = Settings.from_env({**ALPACA_KEYS, "APCA_API_SECRET_KEY": "s3cr3t-value"})

    assert "s3cr3t-value" not in repr(settings)
    assert "'key'" not in repr(settings)


@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_the_readme_settings_table_shows_each_range_as_checked(name: str) -> None:
    bound = BOUNDS[name]
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    [row] = [line for line in readme.splitlines() if line.startswith(f"| `{bound.variable}`")]

    opening = "[" if bound.low_inclusive else "("
    assert f"{opening}{bound.low:g}, {bound.high:g}]" in row
