"""What several commands share: where the terminal's data lives by default, how a
service command gets the technician PIN and other secrets (from a file, or typed at the
terminal; never on the command line, where every user's `ps` would show it), and which exit
status an error gives (:func:`exit_status`: 2 when the person's input was wrong, the argparse
convention, 1 when the operation failed)."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import Final

from drivers.errors import UnknownSchemeError
from emv.errors import PiposError

from ..checkout.errors import RequestError
from ..domain.currency import AmountError, UnknownCurrencyError
from ..domain.errors import SIMULATOR_INSTALL_HINT, ConfigurationError, TerminalError

__all__ = [
    "BAD_INPUT",
    "FAILED",
    "ServiceCommandError",
    "default_data_dir",
    "exit_status",
    "read_secret_file",
    "technician_secret",
]

#: Exit statuses: the input was wrong (what argparse itself exits with for a bad option),
#: or the operation was tried and failed. A script tells "fix the call" from "try again".
BAD_INPUT: Final = 2
FAILED: Final = 1

#: Errors that always mean the person's input was wrong: a configuration or parameter file
#: missing or invalid, an amount or currency that is not one, a request out of range, a
#: device URL whose scheme no driver has.
_BAD_INPUT_ERRORS: Final = (
    ConfigurationError,
    AmountError,
    UnknownCurrencyError,
    RequestError,
    UnknownSchemeError,
)


def exit_status(exc: PiposError) -> int:
    """The exit status `exc` ends a command with: :data:`BAD_INPUT` or :data:`FAILED`.
    A command's own errors say which they are (their ``bad_input``); the rest by class."""
    bad_input = getattr(exc, "bad_input", None)
    if isinstance(bad_input, bool):
        return BAD_INPUT if bad_input else FAILED
    if _component_missing(exc):
        return FAILED
    return BAD_INPUT if isinstance(exc, _BAD_INPUT_ERRORS) else FAILED


def _component_missing(exc: PiposError) -> bool:
    """A part of the install is missing (a module, the simulator), whatever class the layer
    that noticed gave it: the call was right, this machine cannot do it."""
    return isinstance(exc.__cause__, ImportError) or SIMULATOR_INSTALL_HINT in str(exc)


class ServiceCommandError(TerminalError):
    """A service command cannot run as asked (no PIN given, file exists...): bad input
    (exit status 2) unless raised with ``bad_input=False``."""

    def __init__(self, message: str, *, bad_input: bool = True) -> None:
        super().__init__(message)
        self.bad_input = bad_input


def default_data_dir() -> Path:
    env = os.environ.get("PIPOS_DATA_DIR")
    if env:
        return Path(env)
    return Path.home() / ".local" / "share" / "pipos"


def read_secret_file(path: Path, what: str) -> str:
    try:
        value = path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ServiceCommandError(f"{what} file {path}: cannot read ({exc.strerror})") from exc
    if not value:
        raise ServiceCommandError(f"{what} file {path}: empty")
    return value


def technician_secret(args: argparse.Namespace, *, confirm: bool = False) -> str:
    path = args.technician_pin_file or os.environ.get("PIPOS_TECHNICIAN_PIN_FILE")
    if path:
        return read_secret_file(Path(path), "technician PIN")
    if not sys.stdin.isatty():
        raise ServiceCommandError(
            "no technician PIN: give --technician-pin-file (stdin is not a terminal)"
        )
    if not confirm:
        return getpass.getpass("Technician PIN or pass-phrase: ")
    return _new_technician_secret()


#: Rounds of typing a new technician PIN (entry and repeat) before the command gives up.
NEW_SECRET_ROUNDS: Final = 3


def _new_technician_secret() -> str:
    """A new technician PIN typed twice. A weak one is refused as soon as it is typed (not
    after the repeat), and a repeat that differs asks again: a typo does not end the
    provisioning run."""
    from ..security.pin_policy import refusal, technician_secret_problem

    for _ in range(NEW_SECRET_ROUNDS):
        first = getpass.getpass("New technician PIN or pass-phrase: ")
        problem = technician_secret_problem(first)
        if problem is not None:
            print(f"{refusal('technician', *problem)}; choose another", file=sys.stderr)
            continue
        if getpass.getpass("Repeat it: ") == first:
            return first
        print("the two entries differ; type it again", file=sys.stderr)
    raise ServiceCommandError(
        f"no technician PIN after {NEW_SECRET_ROUNDS} tries; nothing was changed"
    )
