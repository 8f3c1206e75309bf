"""`pipos registers pair|list|revoke`: the cash registers paired with the terminal.

A register on another machine pairs with a one-time code (docs/api.md, "Pairing";
terminal.store.registers): ``pair`` prints a new one and when it expires, and the running
terminal, which reads the same file (DATA_DIR/registers.sqlite3), takes it at once: the
register sends it to ``POST /api/v1/pairing`` within 5 minutes and gets its own token.
``list`` shows the registers paired (never a token); ``revoke NAME`` stops one's token
from its next request on.

Which terminal: ``--config FILE`` (a provisioned one: its data directory), ``--state-dir
DIR`` (what ``pipos run`` was given; default ``~/.local/state/pipos/run``, the data in its
``terminal/``), or the data directory itself with ``--data-dir``. Run it as the terminal's
user. On a provisioned terminal (one with a technician credential) ``pair`` and ``revoke``
ask for the technician PIN (``--technician-pin-file``, else on the terminal), audited
either way; the demo's data directory has none, and asks for nothing, as ``pipos queue
export`` does there.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .common import ServiceCommandError, technician_secret

__all__ = ["register"]

#: `pipos run`'s default state directory (its terminal's data in terminal/).
DEFAULT_STATE_DIR = Path("~/.local/state/pipos/run")
#: The file that shows a directory holds a terminal's data.
JOURNAL_FILE = "journal.sqlite3"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    which = argparse.ArgumentParser(add_help=False)
    where = which.add_mutually_exclusive_group()
    where.add_argument(
        "--config", type=Path, help="a provisioned terminal's configuration (its data directory)"
    )
    where.add_argument(
        "--state-dir",
        type=Path,
        help="the demo terminal's state (as given to pipos run; default ~/.local/state/pipos/run)",
    )
    where.add_argument(
        "--data-dir", type=Path, help="the terminal's data directory itself (holds the journal)"
    )
    guarded = argparse.ArgumentParser(add_help=False)
    guarded.add_argument(
        "--technician-pin-file",
        help="on a provisioned terminal: file holding the technician PIN (else a prompt)",
    )
    guarded.add_argument(
        "--secret-file",
        type=Path,
        help="with --data-dir or --state-dir on a terminal with a technician credential: the "
        "device secret opening the keystore (default DATA_DIR/device-secret)",
    )

    registers = subparsers.add_parser(
        "registers",
        help="cash registers paired with the terminal: pair, list, revoke",
        description="A register on another machine pairs with a one-time code (pair) and "
        "gets its own token; list shows them, revoke stops one.",
    )
    sub = registers.add_subparsers(dest="registers_command", metavar="REGISTERS_COMMAND")
    sub.required = True

    pair = sub.add_parser(
        "pair",
        parents=[which, guarded],
        help="print a one-time pairing code (valid 5 minutes)",
        description="Print a new one-time pairing code and when it expires; the code issued "
        "before it stops pairing. The running terminal takes it at once: send it from the "
        'register to POST /api/v1/pairing {"code": "...", "name": "till-2"}.',
    )
    pair.add_argument("--json", action="store_true", help="machine-readable output")
    pair.set_defaults(handler=_pair_command)

    lst = sub.add_parser(
        "list",
        parents=[which],
        help="the paired registers (never a token)",
        description="Every register paired, revoked ones too: name, paired, last seen, revoked.",
    )
    lst.add_argument("--json", action="store_true", help="machine-readable output")
    lst.set_defaults(handler=_list_command)

    revoke = sub.add_parser(
        "revoke",
        parents=[which, guarded],
        help="revoke a paired register's token",
        description="Revoke the register NAME: its token is refused from its next request "
        "on; the name may be paired again.",
    )
    revoke.add_argument("name", metavar="NAME", help="the register's name (pipos registers list)")
    revoke.set_defaults(handler=_revoke_command)


@dataclass(frozen=True)
class _Terminal:
    """Where the terminal named on the command line keeps its data, and how its keystore
    opens (for the technician credential, which is bound to it)."""

    data_dir: Path
    audit_path: Path
    technician_path: Path
    provisioned: bool
    secret: Callable[[], bytes]


def _terminal(args: argparse.Namespace) -> _Terminal:
    from ..service.config import AUDIT_FILE, TECHNICIAN_FILE, load_config
    from ..store.keys import secret_from_file

    if args.config is not None:
        config = load_config(args.config)
        return _checked(
            _Terminal(
                config.data_dir,
                config.audit_path,
                config.technician_path,
                config.provisioned,
                lambda: config.secret_provider().load(),
            )
        )
    if args.data_dir is not None:
        data_dir = Path(args.data_dir)
    else:
        data_dir = Path(args.state_dir or DEFAULT_STATE_DIR).expanduser() / "terminal"
    secret_file = getattr(args, "secret_file", None) or data_dir / "device-secret"
    return _checked(
        _Terminal(
            data_dir,
            data_dir / AUDIT_FILE,
            data_dir / TECHNICIAN_FILE,
            False,
            lambda: secret_from_file(secret_file),
        )
    )


def _checked(terminal: _Terminal) -> _Terminal:
    """`terminal`, if its directory holds a terminal's data (a journal or a keystore):
    a mistyped directory is said so, never given a registers file of its own."""
    from ..store.keys import Keystore

    data_dir = terminal.data_dir
    if not ((data_dir / JOURNAL_FILE).is_file() or Keystore.exists(data_dir)):
        raise ServiceCommandError(
            f"no terminal data in {data_dir} (no {JOURNAL_FILE}, no keystore): give the "
            "terminal's --config, the --state-dir pipos run was given, or its --data-dir"
        )
    owner = data_dir.stat().st_uid
    if owner != os.geteuid():
        # A file this command makes (the registers' file, its WAL) would belong to the
        # caller, and the terminal running as the directory's owner could not write it:
        # pairing would then fail at the counter with "registers unavailable".
        raise ServiceCommandError(
            f"{data_dir} belongs to {_user_name(owner)}, not to {_user_name(os.geteuid())}: "
            f"run this as the terminal's user (sudo -u {_user_name(owner)} pipos registers ...)",
            bad_input=False,
        )
    return terminal


def _user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _store(terminal: _Terminal) -> Any:
    from ..store.registers import FILE, RegisterStore

    return RegisterStore(terminal.data_dir / FILE)


def _technician_check(args: argparse.Namespace, terminal: _Terminal, action: str) -> str:
    """The technician PIN, checked, on a terminal with a technician credential; the
    audit's actor either way."""
    from ..security.technician import KEY_PURPOSE, TechnicianCredential
    from ..store.audit import AuditLog
    from ..store.keys import Keystore

    if not terminal.technician_path.exists():
        if terminal.provisioned:
            # Fail closed: a provisioned terminal never pairs a register without the PIN.
            raise ServiceCommandError(
                f"no technician credential at {terminal.technician_path}, though the "
                "terminal is provisioned; provision it again (pipos provision)",
                bad_input=False,
            )
        return "operator"
    secret = technician_secret(args)
    keystore = Keystore.open(terminal.data_dir, terminal.secret())
    credential = TechnicianCredential(
        terminal.technician_path,
        AuditLog(terminal.audit_path),
        device_key=keystore.data_key(KEY_PURPOSE),
    )
    credential.verify(secret, action=action)
    return "technician"


def _when(moment: float | None) -> str:
    if moment is None:
        return "-"
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")


def _pair_command(args: argparse.Namespace) -> int:
    from ..store.audit import AuditLog
    from ..store.registers import CODE_LIFETIME

    terminal = _terminal(args)
    actor = _technician_check(args, terminal, "pairing_code")
    store = _store(terminal)
    try:
        issued = store.issue_code()
    finally:
        store.close()
    AuditLog(terminal.audit_path).record(
        "pairing_code_issued", actor=actor, expires_at=int(issued.expires_at)
    )
    if args.json:
        print(
            json.dumps(
                {"code": issued.code, "shown": issued.shown, "expires_at": _iso(issued.expires_at)}
            )
        )
        return 0
    print(f"Pairing code: {issued.shown}")
    print(
        f"  valid until {_when(issued.expires_at)} ({int(CODE_LIFETIME // 60)} minutes), for "
        "one register; the code asked for before it no longer pairs"
    )
    print(
        '  at the register: POST /api/v1/pairing {"code": "' + issued.code + '", "name": "till-2"}'
    )
    return 0


def _list_command(args: argparse.Namespace) -> int:
    terminal = _terminal(args)
    store = _store(terminal)
    try:
        paired = store.registers()
    finally:
        store.close()
    if args.json:
        rows = [
            {
                "name": r.name,
                "created_at": _iso(r.created_at),
                "last_seen_at": _iso(r.last_seen_at),
                "revoked_at": _iso(r.revoked_at),
                "revoked": r.revoked,
            }
            for r in paired
        ]
        print(json.dumps({"registers": rows}))
        return 0
    if not paired:
        print("No register is paired (pipos registers pair prints a code for one).")
        return 0
    width = max(len("NAME"), *(len(r.name) for r in paired))
    print(f"{'NAME':<{width}}  {'PAIRED':<23}  {'LAST SEEN':<23}  STATE")
    for r in paired:
        state = f"revoked {_when(r.revoked_at)}" if r.revoked else "active"
        print(f"{r.name:<{width}}  {_when(r.created_at):<23}  {_when(r.last_seen_at):<23}  {state}")
    return 0


def _revoke_command(args: argparse.Namespace) -> int:
    from ..store.audit import AuditLog
    from ..store.idempotency import FILE as IDEMPOTENCY_FILE
    from ..store.idempotency import IdempotencyStore
    from ..store.registers import check_register_name
    from ..store.webhooks import FILE as WEBHOOKS_FILE
    from ..store.webhooks import WebhookStore, drop_webhook

    check_register_name(args.name)  # a name that cannot be one: exit 2 before the PIN
    terminal = _terminal(args)
    actor = _technician_check(args, terminal, "register_revoke")
    store = _store(terminal)
    try:
        revoked = store.revoke(args.name)
    finally:
        store.close()
    if revoked is None:
        raise ServiceCommandError(
            f"no paired register named {args.name!r} (pipos registers list shows them)"
        )
    # Audited as soon as it holds: what follows only tidies up after it.
    AuditLog(terminal.audit_path).record("register_revoked", actor=actor, register=revoked.name)
    print(f"Register {revoked.name!r} revoked: its token is refused from its next request on.")
    # Its webhook, and its kept answers: a register paired again under the name is another.
    webhooks = WebhookStore(terminal.data_dir / WEBHOOKS_FILE)
    try:
        drop_webhook(webhooks, revoked.name)
    finally:
        webhooks.close()
    answers = IdempotencyStore(terminal.data_dir / IDEMPOTENCY_FILE)
    try:
        answers.forget(revoked.name)
    finally:
        answers.close()
    return 0
