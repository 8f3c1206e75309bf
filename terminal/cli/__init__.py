"""The `pipos` command line.

Each feature module contributes its sub-commands through a `register(subparsers)` function,
so this file stays a table of contents. A command handler returns the process exit status.
Exit status 2 means the input was wrong (the argparse convention); 1 means the operation failed.

Only the module of the command being run is imported (the others pull in FastAPI, uvicorn,
SQLite layers...), so `pipos emv decode` starts in a fraction of the time `pipos run` needs;
`pipos --help` and unknown commands import them all to list everything.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Final

from emv.errors import PiposError

from ..domain.logging_setup import configure_logging

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


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(arguments)
    args = parser.parse_args(arguments)
    configure_logging(args.log_level.upper())
    handler: Handler = args.handler
    try:
        return handler(args)
    except PiposError as exc:
        print(f"pipos: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pipos: interrupted", file=sys.stderr)
        return 130
