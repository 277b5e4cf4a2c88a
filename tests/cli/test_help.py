"""Every command's --help describes every option; argparse's internal names never show; a usage error
points at that subcommand's help, exit 2 (issue 15)."""
from __future__ import annotations

import argparse
import re

import pytest

from pamgate.cli import parser
from tests.cli.run import one_line, pamgate


def commands(p=None, path=()):
    p = p or parser()
    yield path, p
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, path + (name,))


COMMANDS = [path for path, _ in commands()]


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) or "pamgate" for p in COMMANDS])
def test_help_describes_every_option(path):
    p = dict(commands())[path]
    for action in p._actions:
        assert action.help, f"pamgate {' '.join(path)}: {action.option_strings or action.dest} has no help"
    text = p.format_help()
    assert not re.search(r"\b\w+_command\b|message_file|\{[a-z,]+\}", text.replace("{pending,done,dead}", "").replace("{fr,en}", "")), text
    assert "pamgate " + " ".join(path) in text


def test_help_through_the_cli(tmp_path):
    p = pamgate(tmp_path, "db", "--help")
    assert p.returncode == 0 and "COMMAND" in p.stdout and "db_command" not in p.stdout
    assert "upgrade" in p.stdout and "migrate it to the latest schema" in p.stdout


@pytest.mark.parametrize("args, helps", [
    (("mappings", "check", "--bogus"), "pamgate mappings check --help"),
    (("db",), "pamgate db --help"),
    (("outbox", "list", "--status", "stuck"), "pamgate outbox list --help"),
    (("mappings", "explain"), "pamgate mappings explain --help"),
])
def test_a_usage_error_points_at_the_subcommands_help(tmp_path, args, helps):
    line = one_line(pamgate(tmp_path, *args))
    assert line.endswith(f"(see {helps})"), line
    assert "_command" not in line and "message_file" not in line
