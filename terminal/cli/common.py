"""What several commands share: where the terminal's data lives by default, and how a
service command gets the technician PIN and other secrets (from a file, or typed at the
terminal; never on the command line, where every user's `ps` would show it)."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

from ..domain.errors import TerminalError

__all__ = ["ServiceCommandError", "default_data_dir", "read_secret_file", "technician_secret"]


class ServiceCommandError(TerminalError):
    """A service command cannot run as asked (no PIN given, file exists...)."""


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
    first = getpass.getpass("Technician PIN or pass-phrase: ")
    if confirm and getpass.getpass("Repeat it: ") != first:
        raise ServiceCommandError("the two entries differ; nothing was changed")
    return first
