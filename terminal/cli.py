"""The `pipos` command line.

Each feature module contributes its sub-commands through a `register(subparsers)` function,
so this file stays a table of contents. A command handler returns the process exit status.
Exit status 2 means the input was wrong (the argparse convention); 1 means the operation failed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from emv.errors import PiposError

from . import cli_acquirer, cli_emv, cli_params, cli_qr, cli_queue, cli_readers, cli_run
from .logging_setup import configure_logging

Handler = Callable[[argparse.Namespace], int]

_REGISTRARS: tuple[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None], ...] = (
    cli_run.register,
    cli_emv.register,
    cli_params.register,
    cli_readers.register,
    cli_queue.register,
    cli_acquirer.register,
    cli_qr.register,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipos",
        description="pipos: merchant payment terminal software.",
    )
    parser.add_argument(
        "--log-level", default="WARNING", help="logging level (DEBUG, INFO, WARNING, ERROR)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for register in _REGISTRARS:
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
