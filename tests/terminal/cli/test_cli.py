"""The `pipos` entry point: every command is reachable and registered by its own module."""

from __future__ import annotations

import argparse

import pytest

from terminal.cli import COMMAND_MODULES, build_parser, main


def _commands(parser: argparse.ArgumentParser) -> set[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert _commands(build_parser()) == set(COMMAND_MODULES)
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in COMMAND_MODULES:
        assert command in out


@pytest.mark.parametrize("command", sorted(COMMAND_MODULES))
def test_each_command_is_registered_by_its_module_alone(command: str) -> None:
    assert command in _commands(build_parser([command]))


def test_global_option_before_the_command() -> None:
    parser = build_parser(["--log-level", "DEBUG", "emv", "decode", "9000"])
    assert _commands(parser) == {"emv"}
    assert parser.parse_args(["--log-level", "DEBUG", "emv", "decode", "9000"]).log_level == "DEBUG"


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["frobnicate"])
    assert exit_.value.code == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err
