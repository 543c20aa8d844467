"""``--help`` of every command says what each option does and what it is when not given
(issue 20, finding 6: expensive defaults were hidden)."""

from __future__ import annotations

import argparse

import pytest

from mdpo.cli.main import COMMANDS, build_parser


def _options(parser: argparse.ArgumentParser, path: list[str]):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _options(child, [*path, name])
        elif action.option_strings and not isinstance(
            action, (argparse._HelpAction, argparse._VersionAction)
        ):
            yield " ".join(path), action


OPTIONS = list(_options(build_parser(), ["mdpo"]))


def test_every_command_is_mounted_from_the_table():
    assert {path.split()[1] for path, _ in OPTIONS} == set(COMMANDS)


@pytest.mark.parametrize(
    "command, action", OPTIONS, ids=[f"{p} {a.option_strings[-1]}" for p, a in OPTIONS]
)
def test_every_option_has_help_and_a_visible_default(command, action):
    text = action.help or ""
    assert text.strip(), f"{command} {action.option_strings[-1]} has no help"
    flag = isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
    if not (flag or action.required or action.default is not None):
        assert "default" in text, (
            f"{command} {action.option_strings[-1]}: say in its help what it is when not given"
        )
