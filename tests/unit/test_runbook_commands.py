"""Every command line the runbooks name (alert policies, docs/DEPLOY.md, the README) exists.

An alert's "First command" is read by someone paged at night: a command, subcommand or option
the command line does not have would answer a usage error instead of the state of things. Each
`python -m execution ...` written in those texts is parsed by the real command line with
`--help` added (eager: it checks the command path and every option name, and needs no network).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from execution.cli import app

ROOT = Path(__file__).resolve().parents[2]
POLICIES = sorted((ROOT / "deploy" / "monitoring" / "policies").glob("*.yaml"))
COMMAND = re.compile(r"(?:python -m execution|trade-exec) ([a-z][a-z-]*\b[^`\n]*)")
"""A command as written: the program, then a command name (a synopsis's `[--project P]` or a
prose mention is not one)."""


def runbook_texts() -> dict[str, str]:
    texts = {
        path.name: yaml.safe_load(path.read_text())["documentation"]["content"] for path in POLICIES
    }
    texts["DEPLOY.md"] = (ROOT / "docs" / "DEPLOY.md").read_text()
    texts["README.md"] = (ROOT / "README.md").read_text()
    return texts


def commands() -> list[tuple[str, str]]:
    found = [
        (source, match.group(1).strip())
        for source, text in runbook_texts().items()
        for match in COMMAND.finditer(text)
    ]
    return sorted(set(found))


def test_the_runbooks_name_commands_at_all() -> None:
    sources = {source for source, _command in commands()}

    assert {path.name for path in POLICIES} <= sources
    assert {"DEPLOY.md", "README.md"} <= sources


@pytest.mark.parametrize(("source", "command"), commands(), ids=lambda value: value[:60])
def test_each_command_a_runbook_names_parses(source: str, command: str) -> None:
    words = shlex.split(command, comments=True)
    result = CliRunner().invoke(app, [*words, "--help"])

    assert result.exit_code == 0, f"{source}: `{command}`\n{result.output}"
