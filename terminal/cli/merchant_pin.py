"""`pipos merchant-pin set|status`: the merchant PIN that refunds, voids and the end of day ask
for (terminal.security.merchant_pin).

`set` takes the technician PIN first (`--technician-pin-file FILE`, $PIPOS_TECHNICIAN_PIN_FILE,
else typed), then the new merchant PIN typed twice, or read from `--pin-file FILE` (mode 0600,
for scripts); a PIN too easy to guess is refused, saying why in English and Chinese. The PIN
is stored hashed and bound to this terminal's keystore, every caller's lock-out starts again,
a clear-text PIN file of an earlier version is removed, and the change is audited. The
running terminal takes the new PIN at its next check: no restart.

`status` says whether a PIN is set and which callers are locked out (no PIN asked).
"""

from __future__ import annotations

import argparse
import datetime
import getpass
import json
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .common import ServiceCommandError, read_secret_file, technician_secret

if TYPE_CHECKING:  # imported when the command runs, so that `pipos --help` stays quick
    from ..security.merchant_pin import MerchantPin
    from ..service.provision import ServiceTerminal

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    command = subparsers.add_parser(
        "merchant-pin",
        help="set the merchant PIN (refunds, voids, end of day) or show its lock-outs",
        description="The merchant PIN is stored hashed, bound to this terminal's keys; wrong "
        "entries lock out the caller that made them (the register, the kiosk page), across "
        "restarts.",
    )
    sub = command.add_subparsers(dest="merchant_pin_command", metavar="MERCHANT_PIN_COMMAND")
    sub.required = True
    set_cmd = sub.add_parser(
        "set",
        help="set or change the merchant PIN (needs the technician PIN)",
        description="Ask for the technician PIN, then the new merchant PIN twice (4 to 12 "
        "digits; sequences, repeats and common PINs are refused). Every caller's lock-out "
        "starts again; a clear-text DATA_DIR/merchant-pin of an earlier version is removed.",
    )
    status = sub.add_parser(
        "status", help="whether a merchant PIN is set, and which callers are locked out"
    )
    for cmd in (set_cmd, status):
        cmd.add_argument(
            "--config",
            type=Path,
            default=None,
            help="terminal configuration (default: $PIPOS_CONFIG or /etc/pipos/terminal.toml)",
        )
    set_cmd.add_argument(
        "--technician-pin-file",
        type=Path,
        default=None,
        help="file holding the technician PIN or pass-phrase (default: "
        "$PIPOS_TECHNICIAN_PIN_FILE, else ask)",
    )
    set_cmd.add_argument(
        "--pin-file",
        type=Path,
        default=None,
        help="file holding the new merchant PIN, mode 0600 (default: ask twice)",
    )
    set_cmd.set_defaults(handler=_set_command)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=_status_command)


def _credential(args: argparse.Namespace) -> tuple[ServiceTerminal, MerchantPin]:
    """(the service terminal, its merchant PIN credential)."""
    from ..security.merchant_pin import FILE, KEY_PURPOSE, MerchantPin
    from ..service.config import default_config_path
    from ..service.provision import open_service_terminal

    terminal = open_service_terminal(Path(args.config) if args.config else default_config_path())
    credential = MerchantPin(
        terminal.config.data_dir / FILE,
        terminal.audit,
        device_key=terminal.keystore.data_key(KEY_PURPOSE),
    )
    return terminal, credential


def _new_pin(args: argparse.Namespace) -> str:
    from ..security.merchant_pin import MerchantPinError, check_new_pin

    def checked(pin: str) -> str:
        """`pin`, or the policy's refusal as bad input (exit status 2)."""
        try:
            check_new_pin(pin)
        except MerchantPinError as exc:
            raise ServiceCommandError(str(exc)) from exc
        return pin

    if args.pin_file is not None:
        path = Path(args.pin_file)
        try:
            mode = path.stat().st_mode
        except OSError as exc:
            raise ServiceCommandError(
                f"merchant PIN file {path}: cannot read ({exc.strerror})"
            ) from exc
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ServiceCommandError(
                f"merchant PIN file {path}: readable by group or others; chmod 600 it"
            )
        return checked(read_secret_file(path, "merchant PIN"))
    if not sys.stdin.isatty():
        raise ServiceCommandError("no merchant PIN: give --pin-file (stdin is not a terminal)")
    first = getpass.getpass("New merchant PIN (4 to 12 digits): ")
    checked(first)  # a weak PIN is refused before it is typed again
    if getpass.getpass("Repeat the new merchant PIN: ") != first:
        raise ServiceCommandError("the two entries differ; the merchant PIN was not changed")
    return first


def _set_command(args: argparse.Namespace) -> int:
    terminal, credential = _credential(args)
    terminal.authorise(technician_secret(args), "merchant_pin_set")
    replacing = credential.exists()
    removed = credential.set(_new_pin(args), actor="technician")
    print(
        f"merchant PIN {'changed' if replacing else 'set'} for terminal "
        f"{terminal.config.terminal_id}; every caller's lock-out starts again"
    )
    if removed:
        print(
            f"removed the clear-text PIN file of an earlier version from {credential.path.parent}"
        )
    return 0


def _status_command(args: argparse.Namespace) -> int:
    _terminal, credential = _credential(args)
    status = credential.status()
    locked = status.locked()
    callers = {
        name: {"failures": state.failures, "retry_after": locked.get(name, 0)}
        for name, state in sorted(status.scopes.items())
    }
    if args.json:
        print(
            json.dumps(
                {
                    "set": status.set_at is not None,
                    "set_at": status.set_at,
                    "callers": callers,
                    "others_retry_after": locked.get("", 0),
                    "tampered": status.tampered,
                },
                indent=2,
            )
        )
        return 0
    if status.set_at is None:
        print("merchant PIN: not set (pipos merchant-pin set)")
        return 0
    when = datetime.datetime.fromtimestamp(status.set_at, datetime.UTC)
    print(f"merchant PIN: set {when:%Y-%m-%d %H:%M} UTC")
    if status.tampered:
        print(f"lock-out record: {status.tampered}; every caller is locked out for a while")
    if locked.get(""):
        print(f"  every caller not listed: locked for {locked['']} s")
    for name, entry in callers.items():
        state = f"locked for {entry['retry_after']} s" if entry["retry_after"] else "not locked"
        print(f"  {name}: {entry['failures']} wrong entries in a row, {state}")
    if not callers and not locked:
        print("  no wrong entries, no lock-out")
    return 0
