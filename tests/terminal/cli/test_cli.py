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


def test_run_language_is_en_or_zh(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser(["run"])
    assert parser.parse_args(["run"]).language is None  # the demo: English
    assert parser.parse_args(["run", "--language", "zh"]).language == "zh"
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--language", "fr"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--language: invalid choice: 'fr'" in err
    choices = err.split("choose from")[1]
    assert "en" in choices
    assert "zh" in choices


def test_run_language_is_refused_for_a_provisioned_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Its language is its acquirer's parameter: an option that would be ignored is refused.
    assert main(["run", "--config", "/nonexistent/terminal.toml", "--language", "zh"]) == 2
    assert "--language is for the demo terminal" in capsys.readouterr().err
