"""`cloudbuild.yaml`: it parses, it tests before it deploys, and it deploys with the flags that
keep a failed trade from poisoning the system.

Each step's script is run by bash, as Cloud Build runs it, with the substitutions as environment
variables (`automapSubstitutions`) and `PATH` holding only fakes of the CLIs it calls (gcloud,
firebase, make, apt-get, cp, ...). The fakes record their arguments and answer the few look-ups
the scripts make, so the tests read the exact command lines a build would run: quoting, variable
expansion and `set -u` included. A command the fakes do not know fails the step.
"""

from __future__ import annotations

import json
import re
import shutil
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from functions_framework import _function_registry

import main
from execution.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CONFIG_PATH = ROOT / "cloudbuild.yaml"
GUIDE_PATH = ROOT / "docs" / "DEPLOY.md"

PROJECT_ID = "demo-trading"
PROJECT_NUMBER = "123456789012"
TRIGGER = f"projects/{PROJECT_ID}/locations/europe-west1/triggers/execute-intent-123456"
SUBSCRIPTION = (
    f"projects/{PROJECT_ID}/subscriptions/eventarc-europe-west1-execute-intent-123-sub-456"
)
# The fake answers `gcloud functions describe NAME --format=value(serviceConfig.uri)` with
# https://NAME + this suffix, so a scheduler job aimed at the wrong function shows.
URL_SUFFIX = "-abc123-ew.a.run.app"
# Where the fake finds an existing alert policy (followed by its policy_id) and dashboard.
POLICY_PREFIX = f"projects/{PROJECT_ID}/alertPolicies/policy-"
DASHBOARD = f"projects/{PROJECT_NUMBER}/dashboards/dash-123"
MONITORING_PATH = ROOT / "deploy" / "monitoring"
PUBSUB_AGENT = f"serviceAccount:service-{PROJECT_NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com"
TEST_STEPS = ("install", "lint", "emulator-suite")

PUBSUB_MAX_ACK_DEADLINE_S = 600
SCHEDULER_MAX_ATTEMPT_DEADLINE_S = 1800
PUBSUB_MAX_RETRY_DELAY_S = 600
GEN2_EVENT_FUNCTION_MAX_TIMEOUT_S = 540

# Records argv (fields split by \037, records by \036) and answers the scripts' look-ups.
# Describing a topic, subscription, scheduler job or log-based metric succeeds, and listing
# alert policies or dashboards finds one, only when STUB_EXISTING=1, so a run can play a first
# deploy into an empty project or a redeploy.
FAKE_CLI = r"""#!/bin/sh
{ printf '%s\037' "$STUB_STEP" "${0##*/}" "$@"; printf '\036'; } >> "$STUB_LOG"
[ "${0##*/}" = gcloud ] || exit 0
format=
for arg in "$@"; do
  case "$arg" in --format=*) format="${arg#--format=}" ;; esac
done
case "$1 $2 $3" in
  "functions describe "*)
    case "$format" in
      *eventTrigger.trigger*) echo "$STUB_TRIGGER" ;;
      *serviceConfig.uri*) echo "https://$3$STUB_URL_SUFFIX" ;;
    esac ;;
  "eventarc triggers describe") echo "$STUB_SUBSCRIPTION" ;;
  "pubsub topics describe"|"pubsub subscriptions describe"|"scheduler jobs describe")
    [ "$STUB_EXISTING" = 1 ] || { echo "ERROR: NOT_FOUND" >&2; exit 1; } ;;
  "logging metrics describe")
    [ "$STUB_EXISTING" = 1 ] || { echo "ERROR: NOT_FOUND" >&2; exit 1; } ;;
  "alpha monitoring policies")
    if [ "$4" = list ] && [ "$STUB_EXISTING" = 1 ]; then
      for arg in "$@"; do
        case "$arg" in --filter=userLabels.policy_id=*) echo "$STUB_POLICY_PREFIX${arg##*=}" ;; esac
      done
    fi ;;
  "monitoring dashboards list") [ "$STUB_EXISTING" = 1 ] && echo "$STUB_DASHBOARD" ;;
esac
exit 0
"""
FAKED_PROGRAMS = ("gcloud", "make", "apt-get", "cp", "mkdir", "rm", "find")


def load_config() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(CONFIG_PATH.read_text())
    return config


CONFIG = load_config()
SUBSTITUTIONS: dict[str, str] = {k: str(v) for k, v in CONFIG["substitutions"].items()}


def sa_email(substitution: str) -> str:
    return f"{SUBSTITUTIONS[substitution]}@{PROJECT_ID}.iam.gserviceaccount.com"


def function_url(function_substitution: str) -> str:
    return f"https://{SUBSTITUTIONS[function_substitution]}{URL_SUFFIX}"


FUNCTIONS = {
    "execute": "_EXECUTE_FUNCTION",
    "sweep": "_SWEEP_FUNCTION",
    "reconcile": "_RECONCILE_FUNCTION",
}
"""The functions the build deploys, by a short name, and the substitution naming each."""

SCHEDULED = {"sweep": "_SCHEDULER_JOB", "reconcile": "_RECONCILE_SCHEDULER_JOB"}
"""The functions Cloud Scheduler calls, and the substitution naming each one's job."""

SERVICE_ACCOUNTS = {name for name in SUBSTITUTIONS if name.endswith("_SA")}
"""The substitutions naming a service account the build deploys with or grants."""


@dataclass(frozen=True)
class Call:
    """One command a step ran: the program's name and its arguments."""

    step: str
    program: str
    args: tuple[str, ...]

    @property
    def flags(self) -> dict[str, str | bool]:
        """`--name=value` as {name: value}, a lone `--name` as {name: True}."""
        found: dict[str, str | bool] = {}
        for arg in self.args:
            if arg.startswith("--"):
                name, sep, value = arg[2:].partition("=")
                found[name] = value if sep else True
        return found

    def starts(self, *words: str) -> bool:
        return (self.program, *self.args[: len(words) - 1]) == words


@dataclass(frozen=True)
class Build:
    """What a run of every step did: exit codes and the commands each ran."""

    returncodes: dict[str, int]
    stderr: dict[str, str]
    calls: list[Call]

    def find(self, *words: str, positional: str | None = None) -> list[Call]:
        return [
            c
            for c in self.calls
            if c.starts(*words) and (positional is None or positional in c.args)
        ]

    def one(self, *words: str, positional: str | None = None) -> Call:
        [call] = self.find(*words, positional=positional)
        return call


def run_build(tmp: Path, *, existing: bool, **overrides: str) -> Build:
    """Run every step's script with fake CLIs, in a scratch folder standing for /workspace."""
    fakes = tmp / "fakes"
    workspace = tmp / "workspace"
    firebase_dir = workspace / "node_modules" / ".bin"
    for folder in (fakes, firebase_dir):
        folder.mkdir(parents=True)
    executables = [fakes / name for name in FAKED_PROGRAMS] + [firebase_dir / "firebase"]
    for path in executables:
        path.write_text(FAKE_CLI)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    # The build runs in a checkout: the monitoring step reads deploy/monitoring/.
    shutil.copytree(MONITORING_PATH, workspace / "deploy" / "monitoring")
    log = tmp / "calls.log"
    log.touch()
    env = {
        **SUBSTITUTIONS,
        **overrides,
        "PROJECT_ID": PROJECT_ID,
        "PROJECT_NUMBER": PROJECT_NUMBER,
        "PATH": str(fakes),
        "STUB_LOG": str(log),
        "STUB_EXISTING": "1" if existing else "0",
        "STUB_TRIGGER": TRIGGER,
        "STUB_SUBSCRIPTION": SUBSCRIPTION,
        "STUB_URL_SUFFIX": URL_SUFFIX,
        "STUB_POLICY_PREFIX": POLICY_PREFIX,
        "STUB_DASHBOARD": DASHBOARD,
    }
    bash = shutil.which("bash")
    assert bash is not None, "these tests run the steps' scripts with bash"
    returncodes, stderr = {}, {}
    for step in CONFIG["steps"]:
        result = subprocess.run(
            [bash, "-c", step["script"]],
            cwd=workspace,
            env={**env, "STUB_STEP": step["id"]},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        returncodes[step["id"]] = result.returncode
        stderr[step["id"]] = result.stderr
    calls = [
        Call(step=fields[0], program=fields[1], args=tuple(fields[2:-1]))
        for record in log.read_text().split("\036")
        if record
        for fields in [record.split("\037")]
    ]
    return Build(returncodes, stderr, calls)


@pytest.fixture(scope="module")
def first_deploy(tmp_path_factory: pytest.TempPathFactory) -> Build:
    """A build into a project where no topic, subscription or scheduler job exists yet."""
    return run_build(tmp_path_factory.mktemp("first"), existing=False)


@pytest.fixture(scope="module")
def redeploy(tmp_path_factory: pytest.TempPathFactory) -> Build:
    """A build into a project where everything exists already."""
    return run_build(tmp_path_factory.mktemp("again"), existing=True)


@pytest.fixture
def build_with(tmp_path: Path) -> Callable[..., Build]:
    """Run the build with some substitutions overridden (as `--substitutions=...` would)."""

    def run(**overrides: str) -> Build:
        return run_build(tmp_path, existing=False, **overrides)

    return run


def env_vars(call: Call) -> dict[str, str]:
    raw = call.flags["set-env-vars"]
    assert isinstance(raw, str)
    return dict(pair.split("=", 1) for pair in raw.split(","))


def seconds(value: str | bool) -> float:
    assert isinstance(value, str) and re.fullmatch(r"\d+s?", value), value
    return float(value.removesuffix("s"))


def deploy_of(build: Build, function: str) -> Call:
    """The `gcloud functions deploy` of one function (a key of FUNCTIONS)."""
    return build.one("gcloud", "functions", "deploy", positional=SUBSTITUTIONS[FUNCTIONS[function]])


def execute_deploy(build: Build) -> Call:
    return deploy_of(build, "execute")


def sweep_deploy(build: Build) -> Call:
    return deploy_of(build, "sweep")


def reconcile_deploy(build: Build) -> Call:
    return deploy_of(build, "reconcile")


def scheduler_job(build: Build, function: str, verb: str) -> Call:
    """The `gcloud scheduler jobs create|update http` of a scheduled function's job."""
    job = SUBSTITUTIONS[SCHEDULED[function]]
    return build.one("gcloud", "scheduler", "jobs", verb, "http", positional=job)


def secret_flags(call: Call) -> dict[str, str | bool]:
    """`--set-secrets=...` or `--clear-secrets`: what reaches the function from Secret Manager."""
    return {name: value for name, value in call.flags.items() if name.endswith("-secrets")}


def account_id(email: str | bool) -> str:
    """The account id of a service account e-mail of the project."""
    assert isinstance(email, str) and email.endswith(f"@{PROJECT_ID}.iam.gserviceaccount.com")
    return email.partition("@")[0]


def guide_accounts(marker: str) -> set[str]:
    """Accounts of the guide's `for sa in A B ...; do ... done` loops whose body holds `marker`."""
    loops = re.findall(
        r"^for sa in ([^;\n]+); do\n(.*?)^done$", GUIDE_PATH.read_text(), re.M | re.S
    )
    return {sa for names, body in loops if marker in body for sa in names.split()}


def subscription_update(build: Build) -> Call:
    return build.one("gcloud", "pubsub", "subscriptions", "update", positional=SUBSCRIPTION)


def command_name(call: Call) -> str:
    """The words that name a command: `gcloud pubsub subscriptions update`, `make test`."""
    words = [call.program]
    if call.program == "make":
        return " ".join(words + [a for a in call.args if not a.startswith("-")])
    if call.program in {"gcloud", "firebase", "apt-get"}:
        values = set(SUBSTITUTIONS.values())
        for arg in call.args:
            if not re.fullmatch(r"[a-z][a-z0-9-]*", arg) or arg in values:
                break
            words.append(arg)
    return " ".join(words)


# ---------------------------------------------------------------- the file and its steps


def test_the_config_parses_into_steps_with_ids_and_scripts() -> None:
    steps = CONFIG["steps"]

    assert steps
    assert all(isinstance(s.get("id"), str) and isinstance(s.get("script"), str) for s in steps)
    assert len({s["id"] for s in steps}) == len(steps)


def test_substitutions_reach_the_scripts_as_environment_variables() -> None:
    assert CONFIG["options"]["automapSubstitutions"] is True


@pytest.mark.parametrize("build_name", ["first_deploy", "redeploy"])
def test_every_step_succeeds_against_fake_clis(
    request: pytest.FixtureRequest, build_name: str
) -> None:
    build: Build = request.getfixturevalue(build_name)

    failed = {step: build.stderr[step] for step, code in build.returncodes.items() if code}

    assert failed == {}


def test_every_command_the_steps_run_is_named_in_the_deploy_guide(
    first_deploy: Build, redeploy: Build
) -> None:
    guide = GUIDE_PATH.read_text()
    names = {command_name(c) for c in first_deploy.calls + redeploy.calls}

    missing = sorted(
        n for n in names if not re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", guide)
    )

    assert missing == []


def test_the_whole_test_suite_runs_before_anything_deploys() -> None:
    ids = [s["id"] for s in CONFIG["steps"]]
    suite = ids.index("emulator-suite")

    assert ids[: suite + 1] == list(TEST_STEPS)
    assert all("waitFor" not in s for s in CONFIG["steps"])


def test_the_emulator_suite_step_runs_make_test(first_deploy: Build) -> None:
    calls = [c for c in first_deploy.calls if c.step == "emulator-suite"]

    assert [command_name(c) for c in calls if c.program == "make"] == ["make test"]


def test_nothing_deploys_when_deploy_is_false(build_with: Callable[..., Build]) -> None:
    build = build_with(_DEPLOY="false")

    deploying = [c for c in build.calls if c.program in {"gcloud", "firebase"}]

    assert deploying == []
    assert set(build.returncodes.values()) == {0}


# ---------------------------------------------------------------- execute_intent


def test_execute_intent_is_a_2nd_gen_function_on_the_intent_topic(first_deploy: Build) -> None:
    call = execute_deploy(first_deploy)

    assert call.flags["gen2"] is True
    assert call.flags["entry-point"] == "execute_intent"
    assert call.flags["trigger-topic"] == env_vars(call)["INTENT_TOPIC"] == "trade-intents"


@pytest.mark.parametrize("function", list(FUNCTIONS))
def test_each_entry_point_deployed_takes_what_its_trigger_delivers(
    first_deploy: Build, function: str
) -> None:
    """A topic trigger (Eventarc) delivers CloudEvents, an HTTP trigger plain requests: `main`
    must declare each entry point so, or functions-framework refuses every delivery. A push
    subscription's target is the HTTP `execute_intent_push` (docs/DEPLOY.md, part 11)."""
    call = deploy_of(first_deploy, function)
    entry_point = call.flags["entry-point"]
    declared = _function_registry.REGISTRY_MAP[entry_point]

    assert callable(getattr(main, entry_point))
    assert declared == ("cloudevent" if "trigger-topic" in call.flags else "http")
    assert _function_registry.REGISTRY_MAP["execute_intent_push"] == "http"


def test_execute_intent_is_deployed_with_retries_on(first_deploy: Build) -> None:
    assert execute_deploy(first_deploy).flags.get("retry") is True


def test_execute_intent_serves_concurrent_requests_on_as_many_threads_and_a_whole_vcpu(
    first_deploy: Build,
) -> None:
    call = execute_deploy(first_deploy)
    concurrency = int(str(call.flags["concurrency"]))

    # Cloud Run refuses a concurrency above 1 below 1 vCPU; functions-framework serves requests
    # on THREADS gunicorn threads (else 4 per CPU it sees), so more requests would queue.
    assert concurrency > 1
    assert float(str(call.flags["cpu"])) >= 1
    assert env_vars(call)["THREADS"] == str(concurrency)


def test_a_concurrency_above_1_without_a_whole_vcpu_is_refused(
    build_with: Callable[..., Build],
) -> None:
    build = build_with(_CPU="0.5")

    assert build.returncodes["deploy-execute-intent"] != 0
    assert "_CONCURRENCY" in build.stderr["deploy-execute-intent"]
    assert (
        build.find("gcloud", "functions", "deploy", positional=SUBSTITUTIONS["_EXECUTE_FUNCTION"])
        == []
    )


def test_the_function_timeout_is_function_timeout_seconds(first_deploy: Build) -> None:
    call = execute_deploy(first_deploy)

    timeout = seconds(call.flags["timeout"])

    assert timeout == float(env_vars(call)["FUNCTION_TIMEOUT_SECONDS"])


def test_the_function_timeout_fits_a_2nd_gen_event_function(first_deploy: Build) -> None:
    assert (
        seconds(execute_deploy(first_deploy).flags["timeout"]) <= GEN2_EVENT_FUNCTION_MAX_TIMEOUT_S
    )


def test_the_ack_deadline_is_at_least_the_function_timeout(first_deploy: Build) -> None:
    timeout = seconds(execute_deploy(first_deploy).flags["timeout"])

    ack_deadline = seconds(subscription_update(first_deploy).flags["ack-deadline"])

    assert timeout <= ack_deadline <= PUBSUB_MAX_ACK_DEADLINE_S


def test_the_subscription_updated_is_the_one_eventarc_made_for_the_trigger(
    first_deploy: Build,
) -> None:
    trigger_lookup = first_deploy.one("gcloud", "eventarc", "triggers", "describe")

    assert TRIGGER in trigger_lookup.args
    assert trigger_lookup.flags["format"] == "value(transport.pubsub.subscription)"
    assert subscription_update(first_deploy).args[3] == SUBSCRIPTION


def test_undeliverable_intents_go_to_the_dead_letter_topic(first_deploy: Build) -> None:
    topic = SUBSTITUTIONS["_DEAD_LETTER_TOPIC"]

    dead_letter_topic = subscription_update(first_deploy).flags["dead-letter-topic"]

    assert dead_letter_topic == f"projects/{PROJECT_ID}/topics/{topic}"


def test_the_dead_letter_policy_allows_between_5_and_100_attempts(first_deploy: Build) -> None:
    attempts = subscription_update(first_deploy).flags["max-delivery-attempts"]

    assert isinstance(attempts, str)
    assert 5 <= int(attempts) <= 100


def test_retry_delays_are_within_pubsub_limits(first_deploy: Build) -> None:
    flags = subscription_update(first_deploy).flags

    low, high = seconds(flags["min-retry-delay"]), seconds(flags["max-retry-delay"])

    assert 0 <= low <= high <= PUBSUB_MAX_RETRY_DELAY_S


def test_redelivery_backoff_outlasts_the_reservation_ttl(first_deploy: Build) -> None:
    # Each redelivery waits at least the minimum delay, so the last attempt comes no sooner
    # than (attempts - 1) x minimum delay after the first: by then a dead invocation's lease
    # has lapsed, and the intent is taken over (or found stale) rather than dead-lettered.
    flags = subscription_update(first_deploy).flags
    ttl = float(env_vars(execute_deploy(first_deploy))["RESERVATION_TTL_SECONDS"])
    attempts = int(str(flags["max-delivery-attempts"]))

    earliest_dead_letter = (attempts - 1) * seconds(flags["min-retry-delay"])

    assert earliest_dead_letter > ttl


def test_pubsub_may_publish_dead_letters_and_acknowledge_their_source(
    first_deploy: Build,
) -> None:
    topic = SUBSTITUTIONS["_DEAD_LETTER_TOPIC"]
    publish = first_deploy.one("gcloud", "pubsub", "topics", "add-iam-policy-binding")
    acknowledge = first_deploy.one("gcloud", "pubsub", "subscriptions", "add-iam-policy-binding")

    assert (publish.args[3], publish.flags["member"], publish.flags["role"]) == (
        topic,
        PUBSUB_AGENT,
        "roles/pubsub.publisher",
    )
    assert (acknowledge.args[3], acknowledge.flags["member"], acknowledge.flags["role"]) == (
        SUBSCRIPTION,
        PUBSUB_AGENT,
        "roles/pubsub.subscriber",
    )


def test_dead_letters_are_kept_on_a_subscription_of_their_own(first_deploy: Build) -> None:
    create = first_deploy.one(
        "gcloud",
        "pubsub",
        "subscriptions",
        "create",
        positional=SUBSTITUTIONS["_DEAD_LETTER_SUBSCRIPTION"],
    )

    assert create.flags["topic"] == SUBSTITUTIONS["_DEAD_LETTER_TOPIC"]
    assert create.flags["expiration-period"] == "never"


def test_a_redeploy_creates_no_topic_or_subscription_again(redeploy: Build) -> None:
    creates = redeploy.find("gcloud", "pubsub", "topics", "create") + redeploy.find(
        "gcloud", "pubsub", "subscriptions", "create"
    )

    assert creates == []


def test_only_the_trigger_service_account_may_invoke_execute_intent(first_deploy: Build) -> None:
    execute = SUBSTITUTIONS["_EXECUTE_FUNCTION"]

    bindings = first_deploy.find(
        "gcloud", "functions", "add-invoker-policy-binding", positional=execute
    )

    assert [b.flags["member"] for b in bindings] == [f"serviceAccount:{sa_email('_TRIGGER_SA')}"]
    assert execute_deploy(first_deploy).flags["trigger-service-account"] == sa_email("_TRIGGER_SA")


# ---------------------------------------------------------------- settings of every function


@pytest.mark.parametrize("function", list(FUNCTIONS))
def test_the_deployed_settings_pass_start_up_validation(first_deploy: Build, function: str) -> None:
    settings = Settings.from_env(env_vars(deploy_of(first_deploy, function)))

    assert settings.project == PROJECT_ID


def test_a_live_deploy_can_require_account_documents_and_bound_the_kill_switch_delay(
    build_with: Callable[..., Build],
) -> None:
    build = build_with(_REQUIRE_ACCOUNT_DOCUMENT="1", _SHARED_READ_MAX_AGE_SECONDS="0")

    settings = Settings.from_env(env_vars(execute_deploy(build)))

    assert settings.require_account_document is True
    assert settings.shared_read_max_age_seconds == 0


@pytest.mark.parametrize("function", ["sweep", "reconcile"])
def test_every_function_shares_the_timeout_and_ttl_settings_of_execute_intent(
    first_deploy: Build, function: str
) -> None:
    names = ("FUNCTION_TIMEOUT_SECONDS", "RESERVATION_TTL_SECONDS")

    execute, other = (
        env_vars(execute_deploy(first_deploy)),
        env_vars(deploy_of(first_deploy, function)),
    )

    assert [other[n] for n in names] == [execute[n] for n in names]


def test_broker_keys_never_travel_as_plain_environment_variables(
    build_with: Callable[..., Build],
) -> None:
    call = execute_deploy(build_with(_BROKER="alpaca"))

    secrets = call.flags["set-secrets"]

    assert not {"APCA_API_KEY_ID", "APCA_API_SECRET_KEY"} & set(env_vars(call))
    assert secrets == (
        f"APCA_API_KEY_ID={SUBSTITUTIONS['_APCA_KEY_ID_SECRET']}:latest,"
        f"APCA_API_SECRET_KEY={SUBSTITUTIONS['_APCA_SECRET_KEY_SECRET']}:latest"
    )


def test_an_alpaca_deploy_passes_start_up_validation_once_its_secrets_are_mounted(
    build_with: Callable[..., Build],
) -> None:
    call = execute_deploy(build_with(_BROKER="alpaca"))
    mounted = {"APCA_API_KEY_ID": "key-from-secret", "APCA_API_SECRET_KEY": "secret"}

    settings = Settings.from_env({**env_vars(call), **mounted})

    assert (settings.broker, settings.agent_mode.value) == ("alpaca", "PAPER")


def test_the_sweeper_can_never_reach_a_broker(first_deploy: Build) -> None:
    settings = Settings.from_env(env_vars(sweep_deploy(first_deploy)))

    assert settings.agent_mode.value == "OFF"


@pytest.mark.parametrize("function", list(FUNCTIONS))
def test_the_functions_get_the_runtime_files_only(first_deploy: Build, function: str) -> None:
    call = deploy_of(first_deploy, function)
    [copy] = first_deploy.find("cp")

    assert call.flags["source"] == ".build/function"
    assert copy.args == ("-r", "main.py", "requirements.txt", "execution", ".build/function/")


# ---------------------------------------------------------------- scheduled functions


@pytest.mark.parametrize("function", list(SCHEDULED))
def test_a_scheduled_function_refuses_unauthenticated_and_outside_calls(
    first_deploy: Build, function: str
) -> None:
    flags = deploy_of(first_deploy, function).flags

    assert flags["trigger-http"] is True
    assert flags["no-allow-unauthenticated"] is True
    assert "allow-unauthenticated" not in flags
    assert flags["ingress-settings"] == "internal-only"


def test_reconcile_orders_runs_the_reconciler_entry_point(first_deploy: Build) -> None:
    call = reconcile_deploy(first_deploy)

    assert call.flags["gen2"] is True
    assert call.flags["entry-point"] == "reconcile_orders"


@pytest.mark.parametrize("function", list(SCHEDULED))
def test_only_the_scheduler_service_account_may_invoke_a_scheduled_function(
    first_deploy: Build, function: str
) -> None:
    name = SUBSTITUTIONS[FUNCTIONS[function]]

    bindings = first_deploy.find(
        "gcloud", "functions", "add-invoker-policy-binding", positional=name
    )

    assert [b.flags["member"] for b in bindings] == [f"serviceAccount:{sa_email('_SCHEDULER_SA')}"]


@pytest.mark.parametrize("function", list(SCHEDULED))
@pytest.mark.parametrize(
    ("build_name", "verb"), [("first_deploy", "create"), ("redeploy", "update")]
)
def test_the_scheduler_posts_to_each_scheduled_function_with_an_oidc_token(
    request: pytest.FixtureRequest, build_name: str, verb: str, function: str
) -> None:
    build: Build = request.getfixturevalue(build_name)
    url = function_url(FUNCTIONS[function])

    flags = scheduler_job(build, function, verb).flags

    assert (flags["http-method"], flags["uri"], flags["oidc-token-audience"]) == ("POST", url, url)
    assert flags["oidc-service-account-email"] == sa_email("_SCHEDULER_SA")


def test_a_redeploy_updates_the_scheduler_jobs_instead_of_creating_them(redeploy: Build) -> None:
    jobs = {SUBSTITUTIONS[job] for job in SCHEDULED.values()}

    creates = redeploy.find("gcloud", "scheduler", "jobs", "create")
    updated = {c.args[4] for c in redeploy.find("gcloud", "scheduler", "jobs", "update", "http")}

    assert creates == []
    assert updated == jobs


def test_the_scheduler_waits_for_the_sweep_and_the_sweep_for_its_deadline(
    first_deploy: Build,
) -> None:
    deploy = sweep_deploy(first_deploy)
    job = scheduler_job(first_deploy, "sweep", "create")

    timeout = seconds(deploy.flags["timeout"])
    deadline = Settings.from_env(env_vars(deploy)).sweep_deadline_seconds

    assert deadline < timeout <= seconds(job.flags["attempt-deadline"])


@pytest.mark.parametrize(
    "overrides",
    [{}, {"_RECONCILE_TIMEOUT_SECONDS": "1200", "_RECONCILE_DEADLINE_SECONDS": "900"}],
    ids=["defaults", "longer-run"],
)
def test_the_scheduler_waits_for_the_reconciler_and_the_reconciler_for_its_deadline(
    build_with: Callable[..., Build], overrides: dict[str, str]
) -> None:
    build = build_with(**overrides)
    deploy = reconcile_deploy(build)
    job = scheduler_job(build, "reconcile", "create")

    timeout = seconds(deploy.flags["timeout"])
    deadline = Settings.from_env(env_vars(deploy)).sweep_deadline_seconds
    attempt_deadline = seconds(job.flags["attempt-deadline"])

    assert deadline < timeout < attempt_deadline <= SCHEDULER_MAX_ATTEMPT_DEADLINE_S


@pytest.mark.parametrize(
    "overrides",
    [
        {"_RECONCILE_DEADLINE_SECONDS": "420", "_RECONCILE_TIMEOUT_SECONDS": "420"},
        {"_RECONCILE_DEADLINE_SECONDS": "1700", "_RECONCILE_TIMEOUT_SECONDS": "1790"},
    ],
    ids=["deadline-not-below-timeout", "timeout-beyond-the-scheduler"],
)
def test_a_reconciler_that_would_be_cut_off_is_never_deployed(
    build_with: Callable[..., Build], overrides: dict[str, str]
) -> None:
    build = build_with(**overrides)

    deployed = build.find(
        "gcloud", "functions", "deploy", positional=SUBSTITUTIONS["_RECONCILE_FUNCTION"]
    )

    assert build.returncodes["deploy-reconcile-orders"] != 0
    assert deployed == []


def test_the_reconciler_looks_back_as_far_as_its_substitution_says(
    build_with: Callable[..., Build],
) -> None:
    build = build_with(_RECONCILE_LOOKBACK_SECONDS="3600")

    settings = Settings.from_env(env_vars(reconcile_deploy(build)))

    assert settings.reconcile_lookback_seconds == 3600


def test_the_reconciler_looks_back_a_day_by_default(first_deploy: Build) -> None:
    settings = Settings.from_env(env_vars(reconcile_deploy(first_deploy)))

    assert settings.reconcile_lookback_seconds == 86400


def test_the_reconciler_runs_every_ten_minutes_by_default(first_deploy: Build) -> None:
    assert scheduler_job(first_deploy, "reconcile", "create").flags["schedule"] == "*/10 * * * *"


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"_BROKER": "alpaca"},
        {
            "_BROKER": "alpaca",
            "_AGENT_MODE": "LIVE",
            "_APCA_API_BASE_URL": "https://api.alpaca.markets",
        },
    ],
    ids=["paper", "alpaca-paper", "alpaca-live"],
)
def test_the_reconciler_reaches_the_broker_execute_intent_trades_with(
    build_with: Callable[..., Build], overrides: dict[str, str]
) -> None:
    build = build_with(**overrides)
    execute, reconcile = execute_deploy(build), reconcile_deploy(build)
    mounted = {"APCA_API_KEY_ID": "key-from-secret", "APCA_API_SECRET_KEY": "secret"}
    fields = ("project", "broker", "agent_mode", "alpaca_base_url", "broker_timeout_seconds")

    executes, reconciles = (
        [getattr(Settings.from_env({**env_vars(c), **mounted}), f) for f in fields]
        for c in (execute, reconcile)
    )

    assert reconciles == executes
    assert secret_flags(reconcile) == secret_flags(execute)
    assert not {"APCA_API_KEY_ID", "APCA_API_SECRET_KEY"} & set(env_vars(reconcile))


def test_each_function_runs_as_its_own_service_account(first_deploy: Build) -> None:
    identities = [deploy_of(first_deploy, f).flags["service-account"] for f in FUNCTIONS] + [
        sa_email("_TRIGGER_SA"),
        sa_email("_SCHEDULER_SA"),
    ]

    assert len(set(identities)) == len(identities)


def test_the_reconciler_runs_as_its_own_runtime_account(first_deploy: Build) -> None:
    identity = reconcile_deploy(first_deploy).flags["service-account"]

    assert identity == sa_email("_RECONCILE_RUNTIME_SA")
    assert SUBSTITUTIONS["_RECONCILE_RUNTIME_SA"] == "trade-reconcile-runtime"


# ---------------------------------------------------------------- service accounts in the guide


def test_the_guide_creates_every_service_account_the_build_names() -> None:
    accounts = {SUBSTITUTIONS[name] for name in SERVICE_ACCOUNTS}

    assert accounts <= guide_accounts("gcloud iam service-accounts create")


def test_the_deployer_may_act_as_exactly_the_accounts_the_build_names() -> None:
    accounts = {SUBSTITUTIONS[name] for name in SERVICE_ACCOUNTS}

    assert guide_accounts("roles/iam.serviceAccountUser") == accounts


def test_every_function_runtime_account_may_use_firestore(first_deploy: Build) -> None:
    runtimes = {account_id(deploy_of(first_deploy, f).flags["service-account"]) for f in FUNCTIONS}

    assert runtimes <= guide_accounts("roles/datastore.user")


def test_exactly_the_functions_that_mount_broker_keys_may_read_their_secrets(
    build_with: Callable[..., Build],
) -> None:
    build = build_with(_BROKER="alpaca")
    mounting = {
        account_id(call.flags["service-account"])
        for call in (deploy_of(build, f) for f in FUNCTIONS)
        if "set-secrets" in call.flags
    }

    assert mounting == guide_accounts("roles/secretmanager.secretAccessor")
    assert mounting == {
        SUBSTITUTIONS["_EXECUTE_RUNTIME_SA"],
        SUBSTITUTIONS["_RECONCILE_RUNTIME_SA"],
    }


# ---------------------------------------------------------------- Firestore


def test_rules_and_indexes_deploy_with_firebase_tools_and_never_force(first_deploy: Build) -> None:
    call = first_deploy.one("firebase", "deploy")

    assert call.flags["only"] == "firestore:rules,firestore:indexes"
    assert call.flags["project"] == PROJECT_ID
    assert "force" not in call.flags


def test_the_ttl_policy_is_on_the_purge_field_never_on_expires_at(first_deploy: Build) -> None:
    call = first_deploy.one("gcloud", "firestore", "fields", "ttls", "update")

    assert call.args[4] == "purge_at"
    assert call.flags["collection-group"] == "execution_reservations"
    assert call.flags["enable-ttl"] is True


def test_firestore_is_configured_before_the_functions_deploy() -> None:
    ids = [s["id"] for s in CONFIG["steps"]]

    deploys = [i for i in ids if i.startswith("deploy-")]

    assert len(deploys) == len(FUNCTIONS)
    assert max(ids.index("firestore-rules-indexes"), ids.index("firestore-ttl")) < min(
        ids.index(d) for d in deploys
    )


def test_the_build_logs_to_cloud_logging_as_its_own_service_account_must() -> None:
    assert CONFIG["options"]["logging"] == "CLOUD_LOGGING_ONLY"


# ---------------------------------------------------------------- monitoring

EXECUTION_SOURCE = "\n".join(
    p.read_text() for p in [ROOT / "main.py", *(ROOT / "execution").rglob("*.py")]
)
METRIC_FILES = sorted((MONITORING_PATH / "metrics").glob("*.yaml"))
POLICY_FILES = sorted((MONITORING_PATH / "policies").glob("*.yaml"))
DASHBOARD_PATH = MONITORING_PATH / "dashboard.json"
USER_METRIC = re.compile(r'metric\.type="logging\.googleapis\.com/user/([^"]+)"')

METRICS_THE_ISSUE_NAMES = {
    "exec.reservation.expired",
    "exec.delivery.dead_lettered",
    "exec.reservation.release_failed",
    "exec.delivery.retry",
    "exec.reconcile.completed",
    "exec.reconcile.incomplete",
    "exec.contradiction",
}
"""Expired reservations, dead letters, release failures, retries by reason, reconciler
findings and contradictions (outlived leases among them)."""


def yaml_file(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def monitoring_calls(build: Build, *words: str) -> list[Call]:
    return [c for c in build.find(*words) if c.step == "monitoring"]


def metric_names_in(text: str) -> set[str]:
    return set(USER_METRIC.findall(text))


def filters_of(document: Any) -> str:
    """Every `filter` value anywhere in a policy or dashboard, one a line."""
    if isinstance(document, dict):
        own = [document["filter"]] if isinstance(document.get("filter"), str) else []
        return "\n".join(own + [filters_of(v) for v in document.values()])
    if isinstance(document, list):
        return "\n".join(filters_of(v) for v in document)
    return ""


def test_every_metric_the_issue_names_is_declared_under_its_file_name() -> None:
    declared = {yaml_file(path)["name"] for path in METRIC_FILES}

    assert [yaml_file(p)["name"] for p in METRIC_FILES] == [p.stem for p in METRIC_FILES]
    assert declared == METRICS_THE_ISSUE_NAMES


@pytest.mark.parametrize("path", METRIC_FILES, ids=lambda p: p.stem)
def test_every_metric_counts_events_the_code_emits(path: Path) -> None:
    log_filter = yaml_file(path)["filter"]
    exact = re.findall(r'jsonPayload\.event="([^"]+)"', log_filter)
    prefixes = [
        p.replace("[.]", ".") for p in re.findall(r'jsonPayload\.event=~"\^([^"]+)"', log_filter)
    ]

    assert exact or prefixes
    for event in exact:
        assert f'"{event}"' in EXECUTION_SOURCE, f"{event} is never emitted"
    for prefix in prefixes:
        assert prefix in EXECUTION_SOURCE, f"no event starts with {prefix}"


def test_contradictions_include_an_invocation_that_outlived_its_lease() -> None:
    log_filter = yaml_file(MONITORING_PATH / "metrics" / "exec.contradiction.yaml")["filter"]

    assert 'jsonPayload.event="exec.intent.outlived_lease"' in log_filter
    assert "exec[.]contradiction[.]" in log_filter


def test_retries_are_counted_by_the_class_of_the_error() -> None:
    metric = yaml_file(MONITORING_PATH / "metrics" / "exec.delivery.retry.yaml")
    extractor = metric["labelExtractors"]["reason"]
    pattern = re.search(r'REGEXP_EXTRACT\(jsonPayload\.error, "(.*)"\)', extractor)

    assert pattern is not None
    assert re.search(pattern.group(1), "StoreUnavailableError: 504 Deadline").group(1) == (  # type: ignore[union-attr]
        "StoreUnavailableError"
    )
    assert [label["key"] for label in metric["metricDescriptor"]["labels"]] == ["reason"]


@pytest.mark.parametrize("path", POLICY_FILES, ids=lambda p: p.stem)
def test_every_policy_watches_declared_metrics_and_says_what_to_run_first(path: Path) -> None:
    policy = yaml_file(path)
    watched = metric_names_in(filters_of(policy["conditions"]))

    assert policy["userLabels"]["policy_id"] == path.stem
    assert watched and watched <= METRICS_THE_ISSUE_NAMES
    assert "First command" in policy["documentation"]["content"]
    assert policy["displayName"] in GUIDE_PATH.read_text()


def test_a_person_is_alerted_on_contradictions_dead_letters_dying_and_a_blind_reconciler() -> None:
    watched = set().union(*(metric_names_in(filters_of(yaml_file(p))) for p in POLICY_FILES))

    assert watched == METRICS_THE_ISSUE_NAMES - {"exec.delivery.retry"}


def test_pending_and_marked_contradictions_do_not_page() -> None:
    policy = (MONITORING_PATH / "policies" / "contradictions.yaml").read_text()

    # Both wait for an attempt still running; the outlived attempt's own line pages.
    assert 'metric.label.kind!="exec.contradiction.pending"' in policy
    assert 'metric.label.kind!="exec.contradiction.marked"' in policy


def test_the_dashboard_charts_every_metric() -> None:
    dashboard = json.loads(DASHBOARD_PATH.read_text())

    assert metric_names_in(filters_of(dashboard)) == METRICS_THE_ISSUE_NAMES


def test_a_first_deploy_creates_every_metric_policy_and_the_dashboard(first_deploy: Build) -> None:
    metrics = monitoring_calls(first_deploy, "gcloud", "logging", "metrics", "create")
    policies = monitoring_calls(first_deploy, "gcloud", "alpha", "monitoring", "policies", "create")
    [dashboard] = monitoring_calls(first_deploy, "gcloud", "monitoring", "dashboards", "create")

    assert {(c.args[3], c.flags["config-from-file"]) for c in metrics} == {
        (p.stem, f"deploy/monitoring/metrics/{p.name}") for p in METRIC_FILES
    }
    assert sorted(str(c.flags["policy-from-file"]) for c in policies) == [
        f"deploy/monitoring/policies/{p.name}" for p in POLICY_FILES
    ]
    assert dashboard.flags["config-from-file"] == "deploy/monitoring/dashboard.json"
    assert all(c.flags["project"] == PROJECT_ID for c in [*metrics, *policies, dashboard])
    assert not monitoring_calls(first_deploy, "gcloud", "logging", "metrics", "update")


def test_a_redeploy_updates_metrics_policies_and_the_dashboard_in_place(redeploy: Build) -> None:
    created = [c for c in redeploy.calls if c.step == "monitoring" and "create" in c.args[:4]]
    metrics = monitoring_calls(redeploy, "gcloud", "logging", "metrics", "update")
    policies = monitoring_calls(redeploy, "gcloud", "alpha", "monitoring", "policies", "update")
    [dashboard] = monitoring_calls(redeploy, "gcloud", "monitoring", "dashboards", "update")

    assert created == []
    assert {c.args[3] for c in metrics} == {p.stem for p in METRIC_FILES}
    assert {(c.args[4], c.flags["policy-from-file"]) for c in policies} == {
        (POLICY_PREFIX + p.stem, f"deploy/monitoring/policies/{p.name}") for p in POLICY_FILES
    }
    assert dashboard.args[3] == DASHBOARD


def test_the_dashboard_is_found_by_the_display_name_it_declares(redeploy: Build) -> None:
    [listing] = monitoring_calls(redeploy, "gcloud", "monitoring", "dashboards", "list")
    display_name = json.loads(DASHBOARD_PATH.read_text())["displayName"]

    assert listing.flags["filter"] == f'displayName="{display_name}"'


@pytest.mark.parametrize("existing", [False, True])
def test_policies_notify_the_channels_the_substitution_names(
    tmp_path: Path, existing: bool
) -> None:
    channels = (
        "projects/demo-trading/notificationChannels/1,projects/demo-trading/notificationChannels/2"
    )
    build = run_build(tmp_path, existing=existing, _ALERT_CHANNELS=channels)
    verb, flag = (
        ("update", "set-notification-channels")
        if existing
        else (
            "create",
            "notification-channels",
        )
    )

    policies = monitoring_calls(build, "gcloud", "alpha", "monitoring", "policies", verb)

    assert len(policies) == len(POLICY_FILES)
    assert all(c.flags[flag] == channels for c in policies)


def test_without_channels_the_policies_name_none(first_deploy: Build) -> None:
    policies = monitoring_calls(first_deploy, "gcloud", "alpha", "monitoring", "policies", "create")

    assert not any("notification-channels" in c.flags for c in policies)


def test_monitoring_deploys_after_every_function_and_job_it_watches() -> None:
    ids = [s["id"] for s in CONFIG["steps"]]

    assert ids[-1] == "monitoring"
