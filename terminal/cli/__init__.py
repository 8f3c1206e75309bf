"""The `pipos` command line.

Each feature module contributes its sub-commands through a `register(subparsers)` function,
so this file stays a table of contents. A command handler returns the process exit status.
Exit status 2 means the input was wrong (the argparse convention); 1 means the operation failed
(:func:`terminal.cli.common.exit_status` decides for an error). A reader that stops reading
(`pipos emv decode ... | head -1`) ends the command quietly, as a Unix filter does.

Only the module of the command being run is imported (the others pull in FastAPI, uvicorn,
SQLite layers...), so `pipos emv decode` starts in a fraction of the time `pipos run` needs;
`pipos --help` and unknown commands import them all to list everything.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Final

from emv.errors import PiposError

from ..domain.logging_setup import configure_logging
from .common import exit_status

Handler = Callable[[argparse.Namespace], int]
Registrar = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]

#: Command -> the module that registers it, in the order `pipos --help` lists them.
COMMAND_MODULES: Final[dict[str, str]] = {
    "run": "run",
    "demo": "run",
    "kiosk": "kiosk",
    "emv": "emv",
    "params": "params",
    "readers": "readers",
    "queue": "queue",
    "sync": "queue",
    "acquirer": "acquirer",
    "qr": "qr",
    "provision": "service",
    "doctor": "service",
    "keys": "service",
    "unit": "service",
    "merchant-pin": "merchant_pin",
    "registers": "registers",
}

_GLOBAL_OPTIONS_WITH_VALUE: Final = frozenset({"--log-level"})


def _requested_command(argv: Sequence[str]) -> str | None:
    """The first positional argument (the command), skipping global options."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _GLOBAL_OPTIONS_WITH_VALUE:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipos",
        description="pipos: merchant payment terminal software.",
    )
    parser.add_argument(
        "--log-level", default="WARNING", help="logging level (DEBUG, INFO, WARNING, ERROR)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    command = _requested_command(argv)
    if command in COMMAND_MODULES:
        modules = [COMMAND_MODULES[command]]
    else:
        modules = list(dict.fromkeys(COMMAND_MODULES.values()))
    for name in modules:
        register: Registrar = importlib.import_module(f"{__package__}.{name}").register
        register(subparsers)
    return parser


#: The exit status of a command whose output pipe was closed: 128 + SIGPIPE, what a shell
#: reports for a filter the pipe's reader stopped (`yes | head -1`).
CLOSED_PIPE_STATUS: Final = 128 + 13


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(arguments)
    except BrokenPipeError:
        return _closed_pipe()


def _main(arguments: list[str]) -> int:
    parser = build_parser(arguments)
    args = parser.parse_args(arguments)  # --help too may meet a closed pipe
    configure_logging(args.log_level.upper())
    handler: Handler = args.handler
    try:
        status = handler(args)
        # Output still buffered is written here, while a closed pipe can still be caught.
        sys.stdout.flush()
        return status
    except PiposError as exc:
        print(f"pipos: error: {exc}", file=sys.stderr)
        return exit_status(exc)
    except KeyboardInterrupt:
        print("pipos: interrupted", file=sys.stderr)
        return 130


def _closed_pipe() -> int:
    """The reader of standard output went away (`| head -1`): nothing more to say to it.
    Python's recipe (the signal module's documentation, "Note on SIGPIPE"): point standard
    output at /dev/null, so the flush at interpreter exit does not raise again and print a
    traceback."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout without a descriptor (a test's capture)
        pass
    return CLOSED_PIPE_STATUS
