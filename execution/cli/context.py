"""What every command shares: settings, the project, lazily built clients, and clear failures.

One `CliContext` is made per invocation (in the Typer callback, or handed in by a test as
`obj=`). Clients are built on first use, so `--help` and argument errors need no network.
Every store or topic call goes through `firestore_call` / `pubsub_call`, which turn "could not
reach it", "no credentials" and "no index" into a `CliError` whose message names the fix; the
`reports_errors` decorator prints it and exits with `EXIT_UNREACHABLE` (3).
"""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NoReturn, ParamSpec, TypeVar

import typer
from google.api_core import exceptions as gexc
from google.api_core import retry as gretry
from google.auth import exceptions as auth_exceptions

from execution.cli.render import console
from execution.clock import Clock, system_clock
from execution.errors import SettingsError, StoreUnavailableError
from execution.firestore.support import UNAVAILABLE_ERRORS, CallPolicy
from execution.models import validate_document_id
from execution.settings import Settings

if TYPE_CHECKING:
    from google.cloud import firestore
    from google.cloud.pubsub_v1 import PublisherClient

    from execution.brokers.base import Broker

EXIT_PROBLEMS = 1
"""The command ran but found problems (invalid intents, failed publishes, sweep errors)."""
EXIT_USAGE = 2
"""Click's own code for a usage error (unknown option, bad value): never used for anything else."""
EXIT_UNREACHABLE = 3
"""The command could not run: store or topic unreachable, no credentials, bad settings."""

EMULATOR_PROJECT = "demo-execution"
"""The project the emulators use (`make demo`, `make test`) when none is set."""

PROBE_SECONDS = 1.0


STORE_UNAVAILABLE: tuple[type[BaseException], ...] = (StoreUnavailableError, *UNAVAILABLE_ERRORS)


class CliError(Exception):
    """A failure to report as one message (naming the fix) and an exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_UNREACHABLE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


P = ParamSpec("P")
R = TypeVar("R")


def reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Print a `CliError` (or unsafe settings) on stderr and exit with its code."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except CliError as exc:
            fail(str(exc), exc.exit_code)
        except SettingsError as exc:
            fail(f"Settings: {exc}", EXIT_UNREACHABLE)

    return wrapper


def fail(message: str, exit_code: int) -> NoReturn:
    """Print `message` as an error on stderr and exit with `exit_code`."""
    console(stderr=True, soft_wrap=True).print(
        f"Error: {message}", style="red", markup=False, highlight=False
    )
    raise typer.Exit(exit_code)


def default_operator(environ: Mapping[str, str]) -> str:
    """Who is acting: `$USER`, else `git config user.email`, else `unknown`."""
    user = environ.get("USER") or environ.get("LOGNAME")
    if user:
        return user
    try:
        email = subprocess.run(
            ["git", "config", "user.email"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        email = ""
    return email or "unknown"


@dataclass
class CliContext:
    """Settings, project and clients for one command-line invocation, each made on first use.

    Nothing here touches the network or fails at construction, so `--help` always works; a
    missing project or unsafe settings surface as a `CliError` when a command needs them.
    """

    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    project_option: str | None = None
    timeout_option: float | None = None
    clock: Clock = system_clock
    sleep: Callable[[float], None] = time.sleep
    after_switch_read: Callable[[], None] = lambda: None
    """Runs between a kill switch's read and its conditional write (tests stage races here)."""
    db_client: firestore.Client | None = None
    publisher_client: PublisherClient | None = None
    broker_client: Broker | None = None
    _settings: Settings | None = None
    _owned: list[Callable[[], None]] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        """`Settings.from_env` of this invocation's environment."""
        if self._settings is None:
            try:
                self._settings = Settings.from_env(self.environ)
            except SettingsError as exc:
                raise CliError(f"Settings: {exc}") from exc
        return self._settings

    @property
    def project(self) -> str:
        """`--project`, else GOOGLE_CLOUD_PROJECT, else `demo-execution` on the emulators."""
        resolved = self.project_option or self.settings.project
        if not resolved and (self.firestore_emulator or self.pubsub_emulator):
            resolved = EMULATOR_PROJECT
        if not resolved:
            raise CliError(
                "No Google Cloud project: set GOOGLE_CLOUD_PROJECT (or pass --project), or "
                "set FIRESTORE_EMULATOR_HOST and PUBSUB_EMULATOR_HOST to use the emulators."
            )
        return resolved

    @property
    def timeout_seconds(self) -> float:
        """Deadline of each store or topic call: `--timeout`, else FIRESTORE_TIMEOUT_SECONDS."""
        return self.timeout_option or self.settings.firestore_timeout_seconds

    # -- where things are -------------------------------------------------------------------

    @property
    def firestore_emulator(self) -> str | None:
        """`FIRESTORE_EMULATOR_HOST`, where set."""
        return self.environ.get("FIRESTORE_EMULATOR_HOST") or None

    @property
    def pubsub_emulator(self) -> str | None:
        """`PUBSUB_EMULATOR_HOST`, where set."""
        return self.environ.get("PUBSUB_EMULATOR_HOST") or None

    @property
    def firestore_target(self) -> str:
        """Where Firestore calls go, for people."""
        host = self.firestore_emulator
        return f"emulator {host}" if host else "Google Cloud"

    @property
    def pubsub_target(self) -> str:
        """Where Pub/Sub calls go, for people."""
        host = self.pubsub_emulator
        return f"emulator {host}" if host else "Google Cloud"

    @property
    def topic_path(self) -> str:
        """`projects/{project}/topics/{INTENT_TOPIC}`."""
        return f"projects/{self.project}/topics/{self.settings.intent_topic}"

    @property
    def policy(self) -> CallPolicy:
        """Deadline and retry for each Firestore call."""
        return CallPolicy(timeout_seconds=self.timeout_seconds)

    def pubsub_retry(self) -> gretry.Retry:
        """Retry transport failures within the deadline: the retry `CallPolicy` gives Firestore."""
        return self.policy.retry()

    # -- clients ----------------------------------------------------------------------------

    def db(self) -> firestore.Client:
        """The Firestore client, built on first use (after a quick probe of an emulator)."""
        if self.db_client is None:
            if self.firestore_emulator:
                self._probe(self.firestore_emulator, self.firestore_unreachable(None))
            from google.cloud import firestore

            with self.firestore_call("client set-up"):
                client = firestore.Client(project=self.project)
            self.db_client = client
            self._owned.append(client.close)
        return self.db_client

    def broker(self) -> Broker:
        """The broker the settings name (BROKER, APCA_API_*), as the function builds it, on
        first use; closed with this context. Raises `SettingsError` where it cannot be built."""
        if self.broker_client is None:
            from execution.bootstrap import broker_from_settings

            broker = broker_from_settings(self.settings, self.db(), clock=self.clock)
            close = getattr(broker, "close", None)  # an HTTP broker holds a connection pool
            if callable(close):
                self._owned.append(close)
            self.broker_client = broker
        return self.broker_client

    def publisher(self) -> PublisherClient:
        """The Pub/Sub publisher, built on first use (after a quick probe of an emulator)."""
        if self.publisher_client is None:
            if self.pubsub_emulator:
                self._probe(self.pubsub_emulator, self.pubsub_unreachable(None))
            from google.cloud.pubsub_v1 import PublisherClient

            with self.pubsub_call("client set-up"):
                client = PublisherClient()
            self.publisher_client = client
            self._owned.append(client.stop)
        return self.publisher_client

    def close(self) -> None:
        """Close the clients this context built (not the ones it was handed)."""
        while self._owned:
            self._owned.pop()()

    @staticmethod
    def _probe(host_port: str, error: CliError) -> None:
        # An emulator that is not running refuses the connection at once; without this probe
        # the client would retry until its deadline before saying so.
        host, _, port = host_port.rpartition(":")
        try:
            with socket.create_connection(
                (host.strip("[]") or "localhost", int(port)), timeout=PROBE_SECONDS
            ):
                pass
        except (OSError, ValueError):
            raise error from None

    # -- failures that name their fix -------------------------------------------------------

    def firestore_unreachable(self, exc: BaseException | None) -> CliError:
        """'Cannot reach Firestore', with the fix for the emulator or for a real project."""
        detail = f" ({_first_line(exc)})" if exc is not None else ""
        host = self.firestore_emulator
        if host:
            return CliError(
                f"Cannot reach Firestore at {host} (FIRESTORE_EMULATOR_HOST){detail}. "
                f"Start the emulators ({_emulator_hint()}) or unset FIRESTORE_EMULATOR_HOST "
                f"{self._to_use_real_project()}."
            )
        return CliError(
            f"Cannot reach Firestore in project {self.project}{detail}. Check the network and "
            "that the project has a Firestore database; raise --timeout for a slow link; or set "
            "FIRESTORE_EMULATOR_HOST to use the emulator."
        )

    def _to_use_real_project(self) -> str:
        if self.project_option or self.settings.project:
            return f"to use project {self.project} in Google Cloud"
        return "and set GOOGLE_CLOUD_PROJECT to use a project in Google Cloud"

    def pubsub_unreachable(self, exc: BaseException | None) -> CliError:
        """'Cannot reach Pub/Sub', with the fix for the emulator or for a real project."""
        detail = f" ({_first_line(exc)})" if exc is not None else ""
        host = self.pubsub_emulator
        if host:
            return CliError(
                f"Cannot reach Pub/Sub at {host} (PUBSUB_EMULATOR_HOST){detail}. "
                f"Start the emulators ({_emulator_hint()}) or unset PUBSUB_EMULATOR_HOST "
                f"{self._to_use_real_project()}."
            )
        return CliError(
            f"Cannot reach Pub/Sub in project {self.project}{detail}. Check the network; raise "
            "--timeout for a slow link; or set PUBSUB_EMULATOR_HOST to use the emulator."
        )

    def missing_topic(self) -> CliError:
        """The intents topic does not exist: how to create it here."""
        topic = self.settings.intent_topic
        host = self.pubsub_emulator
        if host:
            create = (
                f"CLOUDSDK_API_ENDPOINT_OVERRIDES_PUBSUB=http://{host}/ "
                f"CLOUDSDK_AUTH_DISABLE_CREDENTIALS=true "
                f"gcloud pubsub topics create {topic} --project {self.project}"
            )
            where = f"on the Pub/Sub emulator at {host}"
        else:
            create = f"gcloud pubsub topics create {topic} --project {self.project}"
            where = f"in project {self.project}"
        return CliError(
            f"Topic {self.topic_path} does not exist {where}. Create it: `{create}` "
            "(or set INTENT_TOPIC to the topic the function subscribes to)."
        )

    def _no_credentials(self, service: str, exc: BaseException) -> CliError:
        return CliError(
            f"No usable Google credentials for {service} in project {self.project} "
            f"({_first_line(exc)}). Run `gcloud auth application-default login`, or set "
            f"{'FIRESTORE' if service == 'Firestore' else 'PUBSUB'}_EMULATOR_HOST to use the "
            "emulator."
        )

    def _denied(self, service: str, exc: BaseException) -> CliError:
        role = "roles/datastore.user" if service == "Firestore" else "roles/pubsub.publisher"
        return CliError(
            f"{service} in project {self.project} refused the call ({_first_line(exc)}). Grant "
            f"your account {role} on the project, or check --project / GOOGLE_CLOUD_PROJECT."
        )

    @contextmanager
    def firestore_call(self, operation: str) -> Iterator[None]:
        """Run Firestore calls; failures that stop the command become a `CliError`."""
        try:
            yield
        except STORE_UNAVAILABLE as exc:
            raise self.firestore_unreachable(exc) from exc
        except auth_exceptions.DefaultCredentialsError as exc:
            raise self._no_credentials("Firestore", exc) from exc
        except (gexc.PermissionDenied, gexc.Unauthenticated) as exc:
            raise self._denied("Firestore", exc) from exc
        except gexc.FailedPrecondition as exc:
            if "index" not in str(exc).lower():
                raise
            raise missing_index(exc) from exc

    @contextmanager
    def pubsub_call(self, operation: str) -> Iterator[None]:
        """Run Pub/Sub calls; failures that stop the command become a `CliError`."""
        try:
            yield
        except gexc.NotFound as exc:
            raise self.missing_topic() from exc
        except UNAVAILABLE_ERRORS as exc:
            raise self.pubsub_unreachable(exc) from exc
        except auth_exceptions.DefaultCredentialsError as exc:
            raise self._no_credentials("Pub/Sub", exc) from exc
        except (gexc.PermissionDenied, gexc.Unauthenticated) as exc:
            raise self._denied("Pub/Sub", exc) from exc


def missing_index(exc: BaseException) -> CliError:
    """Firestore refused a query for want of an index: deploy the declared ones."""
    return CliError(
        f"Firestore needs an index for this query ({_first_line(exc)}). Deploy the project's "
        "indexes: `firebase deploy --only firestore:indexes` (they are declared in "
        "firestore.indexes.json)."
    )


def is_missing_index(exc: BaseException) -> bool:
    """True for Firestore's 'the query requires an index' refusal."""
    return isinstance(exc, gexc.FailedPrecondition) and "index" in str(exc).lower()


def _emulator_hint() -> str:
    return (
        "`firebase emulators:start --only firestore,pubsub`; see the README's command-line section"
    )


def _first_line(exc: BaseException | None) -> str:
    text = str(exc or "").strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= 240 else line[:237] + "..."


def document_id(value: str | None) -> str | None:
    """Typer callback: refuse ids that would address the wrong document (`a/b`, `..`)."""
    if value is None:
        return None
    try:
        return validate_document_id(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
