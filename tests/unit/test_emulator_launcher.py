"""The emulator launcher refuses clearly: what is missing, and how to get it (no silent skip)."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools import emulators


def test_without_gcloud_starting_an_emulator_says_what_is_missing_and_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(emulators.EmulatorUnavailable) as raised:
        emulators.Emulator(emulators.FIRESTORE, tmp_path).start()

    message = str(raised.value)
    assert "`gcloud` is not on PATH" in message
    assert "apt-get install google-cloud-cli-firestore-emulator" in message
    assert "FIRESTORE_EMULATOR_HOST" in message


def test_a_host_variable_where_nothing_answers_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    nowhere = f"127.0.0.1:{emulators.free_loopback_port()}"
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", nowhere)

    with (
        pytest.raises(emulators.EmulatorUnavailable) as raised,
        emulators.running(emulators.PUBSUB, log_dir=tmp_path),
    ):
        pass

    assert f"PUBSUB_EMULATOR_HOST={nowhere}, but nothing answers there" in str(raised.value)


def test_the_command_line_without_a_command_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as raised:
        emulators.main([])

    assert raised.value.code == 2


def test_without_the_cloud_cli_the_command_goes_to_firebase_tools_emulators_exec(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A stand-in for node_modules/.bin/firebase: records its arguments, runs the command line.
    record = tmp_path / "firebase-args"
    firebase = tmp_path / "firebase"
    firebase.write_text(f'#!/bin/sh\necho "$@" > {record}\nshift 5\nexec /bin/sh -c "$1"\n')
    firebase.chmod(0o755)
    monkeypatch.setattr(emulators, "FIREBASE", firebase)
    monkeypatch.setenv("PATH", str(tmp_path / "no-cloud-cli-here"))
    for kind in emulators.KINDS.values():
        monkeypatch.delenv(kind.env_var, raising=False)

    status = emulators.run_inside(["exit 7"], list(emulators.KINDS.values()))

    assert status == 7
    assert record.read_text().split() == [
        "emulators:exec",
        "--project",
        emulators.EMULATOR_PROJECT,
        "--only",
        "firestore,pubsub",
        "exit",
        "7",
    ]
