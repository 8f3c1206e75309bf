"""`pipos queue status|list|export|import` and `pipos sync`: the offline queue by hand.

Where things live (until the terminal's configuration defines it): everything under a data
directory, `--data-dir` (default $PIPOS_DATA_DIR, else ~/.local/share/pipos), laid out as
`pipos run` lays out its state directory: keystore.json, sequence.json, offline_queue.sqlite3.
The device secret that opens the keystore is read from `--secret-file` (default
$PIPOS_DEVICE_SECRET_FILE, else DATA_DIR/device-secret).

`status` and `list` need no key (they show only amounts, states and masked PANs); `export`,
`import` and `sync` open the keystore for the card-data key.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import getpass
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

from emv.errors import PiposError
from offline_queue import (
    Backoff,
    Forwarder,
    OfflineQueue,
    QueuedPayment,
    QueueStatus,
    State,
    StateSummary,
)
from offline_queue.backup import BackupSigner

from ..acquirer.uplink import QUEUE_KEY_PURPOSE, AcquirerUplink
from ..domain.currency import UnknownCurrencyError, format_amount
from ..domain.errors import TerminalError
from ..service.transfer import (
    TransferGuard,
    acquirer_key_confirmer,
    export_queue_file,
    import_queue_file,
    keystore_signers,
)
from ..store.keys import Keystore, SequenceCounter, SequenceError, secret_from_file
from .common import default_data_dir

if TYPE_CHECKING:
    from ..acquirer.client import AcquirerClient
    from ..acquirer.link import AcquirerLink

__all__ = ["ProgressBar", "main", "register"]

QUEUE_FILE: Final = "offline_queue.sqlite3"
DEFAULT_HOST_URL: Final = "http://127.0.0.1:8600"


class QueueCommandError(TerminalError):
    """A `pipos queue` / `pipos sync` command cannot run as asked (missing file, no
    secret...): bad input unless raised with ``bad_input=False``."""

    def __init__(self, message: str, *, bad_input: bool = True) -> None:
        super().__init__(message)
        self.bad_input = bad_input  # exit status 2, else 1 (terminal.cli.common.exit_status)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        default=None,
        help="a provisioned terminal's configuration (terminal.toml): its data directory, "
        "device secret and acquirer URL become the defaults",
    )
    common.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="terminal data directory (default: $PIPOS_DATA_DIR or ~/.local/share/pipos)",
    )
    common.add_argument(
        "--db", type=Path, default=None, help=f"queue database (default: DATA_DIR/{QUEUE_FILE})"
    )
    keyed = argparse.ArgumentParser(add_help=False)
    keyed.add_argument(
        "--secret-file",
        type=Path,
        default=None,
        help="device secret opening the keystore (default: $PIPOS_DEVICE_SECRET_FILE "
        "or DATA_DIR/device-secret)",
    )
    secret_prompt = argparse.ArgumentParser(add_help=False)
    secret_prompt.add_argument(
        "--passphrase-file",
        type=Path,
        default=None,
        help="file holding the backup passphrase (default: ask on the terminal)",
    )

    q = subparsers.add_parser("queue", help="the offline payment queue")
    qsub = q.add_subparsers(dest="queue_command", metavar="QUEUE_COMMAND")
    qsub.required = True

    status = qsub.add_parser(
        "status",
        parents=[common],
        help="counts, amounts and oldest payment per state",
        description="Counts, amounts per currency and the age of the oldest payment, per state.",
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=_status_command)

    lst = qsub.add_parser("list", parents=[common], help="list queued payments (masked PANs only)")
    lst.add_argument(
        "--state",
        action="append",
        choices=[s.value for s in State],
        help="only payments in this state (repeatable)",
    )
    lst.add_argument("--flagged", action="store_true", help="only declined / failed payments")
    lst.add_argument("--limit", type=_positive_int, default=None, help="at most N payments")
    lst.add_argument("--json", action="store_true", help="machine-readable output")
    lst.set_defaults(handler=_list_command)

    # Card data leaving or entering the queue: the technician's PIN on a provisioned terminal.
    technician = argparse.ArgumentParser(add_help=False)
    technician.add_argument(
        "--technician-pin-file",
        help="on a provisioned terminal: file holding the technician PIN (else a prompt)",
    )
    export = qsub.add_parser(
        "export",
        parents=[common, keyed, secret_prompt, technician],
        help="write an encrypted backup of the queue for a technician",
        description="Write every queued payment to FILE, encrypted with a key derived from a "
        "passphrase (scrypt, AES-256-GCM). Import it on a replacement unit with `pipos queue "
        "import`.",
    )
    export.add_argument("file", type=Path, help="backup file to create (must not exist)")
    export.set_defaults(handler=_export_command)

    acquirer = argparse.ArgumentParser(add_help=False)
    acquirer.add_argument(
        "--host-url",
        default=None,
        help=f"acquirer URL (default: the configured one, $PIPOS_ACQUIRER_URL or "
        f"{DEFAULT_HOST_URL})",
    )

    imp = qsub.add_parser(
        "import",
        parents=[common, keyed, secret_prompt, technician, acquirer],
        help="add the payments of a backup to this terminal's queue",
        description="Add the payments of a backup made with `pipos queue export`. Payments "
        "already in the queue are skipped, so importing the same file twice adds nothing. "
        "Payments signed by another unit come in only once the acquirer confirms that unit's "
        "key belongs to a terminal of this merchant: the terminal must be enrolled and reach "
        "its acquirer then.",
    )
    imp.add_argument("file", type=Path, help="backup file")
    imp.set_defaults(handler=_import_command)

    sync = subparsers.add_parser(
        "sync",
        parents=[common, keyed, acquirer],
        help="send the offline queue to the acquirer now",
        description="Send every pending payment to the acquirer in batches, with a progress bar."
        " Safe to interrupt: an interrupted batch is resent as it was, never paid twice.",
    )
    sync.add_argument("--batch-size", type=_positive_int, default=100, help="payments per batch")
    sync.add_argument(
        "--max-failures",
        type=_positive_int,
        default=5,
        help="give up after N failed uploads in a row (default %(default)s)",
    )
    sync.set_defaults(handler=_sync_command)


def main(argv: Sequence[str] | None = None) -> int:
    """Run these commands on their own (tests, or before `pipos` wires them in)."""
    parser = argparse.ArgumentParser(prog="pipos")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    register(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except PiposError as exc:
        print(f"pipos: error: {exc}", file=sys.stderr)
        return 1


# --- helpers ---------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {value}")
    return value


def _configured(args: argparse.Namespace) -> Any:
    """The terminal configuration named by --config, if any (see terminal.service.config)."""
    if getattr(args, "config", None) is None:
        return None
    from ..service.config import load_config

    return load_config(args.config)


def _data_dir(args: argparse.Namespace) -> Path:
    if args.data_dir:
        return Path(args.data_dir)
    config = _configured(args)
    return Path(config.data_dir) if config is not None else default_data_dir()


def _host_url(args: argparse.Namespace) -> str:
    if args.host_url:
        return str(args.host_url)
    config = _configured(args)
    if config is not None:
        return str(config.host_url)
    return os.environ.get("PIPOS_ACQUIRER_URL", DEFAULT_HOST_URL)


def _db_path(args: argparse.Namespace) -> Path:
    return Path(args.db) if args.db else _data_dir(args) / QUEUE_FILE


def _open_readonly(args: argparse.Namespace) -> OfflineQueue:
    path = _db_path(args)
    if not path.exists():
        raise QueueCommandError(
            f"no offline queue at {path} (use --db or --data-dir to point at the terminal's)"
        )
    return OfflineQueue.open(path, None, create=False)


def _open_keystore(args: argparse.Namespace) -> Keystore:
    data_dir = _data_dir(args)
    if not Keystore.exists(data_dir):
        raise QueueCommandError(
            f"no keystore in {data_dir} (use --data-dir to point at the terminal's data)"
        )
    config = _configured(args)
    explicit = args.secret_file or os.environ.get("PIPOS_DEVICE_SECRET_FILE")
    if explicit:
        secret = secret_from_file(Path(explicit))
    elif config is not None:
        # The configured provider: the TPM, the Pi's OTP key or the file.
        secret = config.secret_provider().load()
    else:
        secret = secret_from_file(data_dir / "device-secret")
    return Keystore.open(data_dir, secret)


def _open_keyed(args: argparse.Namespace, keystore: Keystore, *, create: bool) -> OfflineQueue:
    path = _db_path(args)
    if not create and not path.exists():
        raise QueueCommandError(f"no offline queue at {path}")
    return OfflineQueue.open(path, keystore.data_key(QUEUE_KEY_PURPOSE), create=create)


def _passphrase(args: argparse.Namespace, *, confirm: bool) -> bytes:
    if args.passphrase_file is not None:
        try:
            text = Path(args.passphrase_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise QueueCommandError(
                f"passphrase file {args.passphrase_file}: cannot read ({exc.strerror})"
            ) from exc
        value = text.rstrip("\r\n")
        if not value:
            raise QueueCommandError(f"passphrase file {args.passphrase_file}: empty")
        return value.encode("utf-8")
    if not sys.stdin.isatty():
        raise QueueCommandError("no passphrase: give --passphrase-file (stdin is not a terminal)")
    first = getpass.getpass("Backup passphrase: ")
    if confirm and getpass.getpass("Repeat the passphrase: ") != first:
        raise QueueCommandError("the two passphrases differ; nothing was written")
    return first.encode("utf-8")


def _money(minor: int, currency: int) -> str:
    try:
        return format_amount(minor, currency)
    except UnknownCurrencyError:
        return f"{minor} (currency {currency:03d})"


def _amounts(amounts: dict[int, int] | Any) -> str:
    if not amounts:
        return "-"
    return ", ".join(_money(v, k) for k, v in sorted(amounts.items()))


def _age(seconds: int) -> str:
    seconds = max(0, seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _when(ts: int | None) -> str:
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


# --- status / list ------------------------------------------------------------------------


def status_lines(status: QueueStatus) -> list[str]:
    lines = [f"{'state':<9} {'count':>6}  {'oldest':>8}  amount"]
    for state in State:
        s = status.states[state]
        oldest = "-" if s.oldest_created_at is None else _age(status.now - s.oldest_created_at)
        lines.append(f"{state.value:<9} {s.count:>6}  {oldest:>8}  {_amounts(dict(s.amounts))}")
    lines.append(
        f"waiting to be sent: {status.outstanding_count} payment(s), "
        f"{_amounts(status.outstanding_amounts())}"
    )
    if status.flagged:
        lines.append(
            f"ATTENTION: {status.flagged} payment(s) declined or refused by the host after "
            "being approved offline - see `pipos queue list --flagged`"
        )
    return lines


def _empty_status(now: int) -> QueueStatus:
    """The status of a queue that holds nothing."""
    return QueueStatus(
        now=now,
        states={state: StateSummary(state, 0, {}, None) for state in State},
        flagged=0,
    )


def _status_command(args: argparse.Namespace) -> int:
    if not args.db and not _db_path(args).exists() and Keystore.exists(_data_dir(args)):
        # A terminal (its keystore is there) that has not queued a payment yet: the queue's
        # file is made with the first offline payment, so nothing waits.
        status = _empty_status(int(time.time()))
    else:
        with _open_readonly(args) as queue:
            status = queue.status()
    if args.json:
        doc = {
            "now": status.now,
            "flagged": status.flagged,
            "states": {
                s.value: {
                    "count": v.count,
                    "amounts": {f"{c:03d}": a for c, a in v.amounts.items()},
                    "oldest_created_at": v.oldest_created_at,
                }
                for s, v in status.states.items()
            },
        }
        print(json.dumps(doc, indent=2, sort_keys=True))
        return 0
    for line in status_lines(status):
        print(line)
    return 0


def list_lines(payments: Sequence[QueuedPayment]) -> list[str]:
    if not payments:
        return ["no payments"]
    lines = [
        f"  {'transaction':<24} {'state':<9} {'amount':>14}  {'card':<19} {'queued':<20} "
        f"{'tries':>5}  host / reason"
    ]
    for p in payments:
        flag = "!" if p.flagged and p.acknowledged_at is None else " "
        note = " ".join(x for x in (p.host_ref, p.host_code, p.reason) if x) or "-"
        lines.append(
            f"{flag} {p.transaction_id:<24} {p.state.value:<9} {_money(p.amount, p.currency):>14}"
            f"  {p.masked_pan:<19} {_when(p.created_at):<20} {p.attempts:>5}  {note}"
        )
    return lines


def _list_command(args: argparse.Namespace) -> int:
    states = [State(s) for s in args.state] if args.state else None
    with _open_readonly(args) as queue:
        payments = queue.list_payments(states, flagged_only=args.flagged, limit=args.limit)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "transaction_id": p.transaction_id,
                        "state": p.state.value,
                        "amount": p.amount,
                        "currency": p.currency,
                        "masked_pan": p.masked_pan,
                        "brand": p.brand,
                        "created_at": p.created_at,
                        "finished_at": p.finished_at,
                        "attempts": p.attempts,
                        "host_ref": p.host_ref,
                        "host_code": p.host_code,
                        "reason": p.reason,
                        "flagged": p.flagged,
                    }
                    for p in payments
                ],
                indent=2,
            )
        )
        return 0
    for line in list_lines(payments):
        print(line)
    return 0


# --- export / import -----------------------------------------------------------------------


def _transfer_guard(args: argparse.Namespace) -> TransferGuard:
    """A provisioned terminal (one with a technician credential) lets card data leave or
    enter its queue only with the technician's PIN, audited either way, as `pipos unit
    export|import` does (terminal.service.transfer); a developer's or a test queue has none."""
    from ..security.technician import KEY_PURPOSE, TechnicianCredential
    from ..service.config import AUDIT_FILE, TECHNICIAN_FILE
    from ..store.audit import AuditLog
    from .common import technician_secret

    data_dir = _data_dir(args)
    if not (data_dir / TECHNICIAN_FILE).exists():
        config = _configured(args)
        if config is not None and config.provisioned:
            # Fail closed: a provisioned terminal's card data never moves without the PIN.
            raise QueueCommandError(
                f"no technician credential in {data_dir}, though {args.config} is provisioned: "
                "card data stays in the queue; provision the terminal again (pipos provision)",
                bad_input=False,
            )
        return TransferGuard(None, None, lambda: "")
    audit = AuditLog(data_dir / AUDIT_FILE)
    # Bound to the keystore's key (terminal.security.technician), opened when it is checked.
    credential = TechnicianCredential(
        data_dir / TECHNICIAN_FILE,
        audit,
        device_key=lambda: _open_keystore(args).data_key(KEY_PURPOSE),
    )
    return TransferGuard(credential, audit, lambda: technician_secret(args))


class _Keyed:
    """The terminal's keystore, opened once for a command: its queue and its public keys."""

    def __init__(self, args: argparse.Namespace) -> None:
        self._args = args
        self._keystore: Keystore | None = None

    def keystore(self) -> Keystore:
        if self._keystore is None:
            self._keystore = _open_keystore(self._args)
        return self._keystore

    @contextlib.contextmanager
    def queue(self, *, create: bool) -> Iterator[OfflineQueue]:
        with _open_keyed(self._args, self.keystore(), create=create) as queue:
            yield queue

    def signers(self) -> dict[str, BackupSigner]:
        return keystore_signers(self.keystore())

    @contextlib.contextmanager
    def client(self) -> Iterator[AcquirerClient]:
        with _acquirer_client(self._args, self.keystore()) as client:
            yield client


@contextlib.contextmanager
def _acquirer_client(args: argparse.Namespace, keystore: Keystore) -> Iterator[AcquirerClient]:
    """The terminal's own connection to its acquirer, as `pipos sync` and `pipos queue
    import` use it: its URL and TLS options from the configuration (or --host-url), and the
    sequence counter, which a running terminal holds."""
    from ..acquirer.client import AcquirerClient  # httpx is only needed here

    if keystore.terminal_id is None:
        raise QueueCommandError(
            "this terminal is not enrolled with an acquirer; enrol it first", bad_input=False
        )
    config = _configured(args)
    tls = None
    if config is not None:
        from ..service.provision import tls_from_config

        tls = tls_from_config(config)
    try:
        sequence = SequenceCounter(_data_dir(args) / "sequence.json")
    except SequenceError as exc:
        raise QueueCommandError(
            f"{exc}: the terminal is probably running, and it talks to the acquirer itself; "
            "stop it first",
            bad_input=False,
        ) from exc
    try:
        with AcquirerClient(_host_url(args), keystore, sequence, tls=tls) as client:
            yield client
    finally:
        sequence.close()


def _export_command(args: argparse.Namespace) -> int:
    if Path(args.file).exists():
        raise QueueCommandError(f"{args.file}: already exists; choose another file name")
    keyed = _Keyed(args)
    count = export_queue_file(
        lambda: keyed.queue(create=False),
        args.file,
        lambda: _passphrase(args, confirm=True),
        _transfer_guard(args),
        signers=keyed.signers,
    )
    print(f"exported {count} payment(s) to {args.file} (encrypted; keep the passphrase apart)")
    return 0


def _import_command(args: argparse.Namespace) -> int:
    if not Path(args.file).is_file():
        raise QueueCommandError(f"{args.file}: no such file")
    keyed = _Keyed(args)
    # Only payments this terminal signed, or the unit that exported them with a key the
    # acquirer confirms, exactly as signed, come in; one that is not refuses the whole file
    # (terminal.service.transfer).
    report = import_queue_file(
        lambda: keyed.queue(create=True),
        args.file,
        lambda: _passphrase(args, confirm=False),
        _transfer_guard(args),
        signers=keyed.signers,
        confirm_keys=acquirer_key_confirmer(keyed.client),
    )
    print(
        f"imported {len(report.added)} payment(s); {len(report.already_present)} already "
        f"in the queue"
    )
    if report.conflicts:
        print(
            f"{len(report.conflicts)} payment(s) NOT imported: the queue holds a different "
            f"payment with the same transaction id: {', '.join(report.conflicts)}",
            file=sys.stderr,
        )
        return 1
    return 0


# --- sync -----------------------------------------------------------------------------------


class ProgressBar:
    """A plain-text progress bar. On a TTY it redraws one line; otherwise it prints a line
    each time another tenth is done, so logs and pipes get readable output."""

    def __init__(self, stream: IO[str], *, width: int = 30, tty: bool | None = None) -> None:
        self._stream = stream
        self._width = width
        self._tty = stream.isatty() if tty is None else tty
        self._last_step = -1

    def __call__(self, done: int, total: int) -> None:
        fraction = 1.0 if total == 0 else min(1.0, done / total)
        filled = int(fraction * self._width)
        bar = "#" * filled + "." * (self._width - filled)
        text = f"[{bar}] {done}/{total} sent"
        if self._tty:
            self._stream.write("\r" + text)
            if done >= total:
                self._stream.write("\n")
        else:
            step = int(fraction * 10)
            if step == self._last_step:
                return
            self._last_step = step
            self._stream.write(text + "\n")
        self._stream.flush()


@contextlib.contextmanager
def _payment_link(
    args: argparse.Namespace, keystore: Keystore, client: AcquirerClient
) -> Iterator[AcquirerLink]:
    """Where payments go: the configuration's ISO 8583 link (acquirer.protocol =
    "iso8583": one 0220 advice per payment), or the pipos client itself."""
    config = _configured(args)
    if config is None or config.protocol != "iso8583":
        yield client
        return
    from ..acquirer.iso8583.settings import open_link
    from ..service.config import iso8583_settings

    settings = iso8583_settings(config)
    assert settings is not None
    # The currency only fills an empty batch's 0500, which a sync never sends.
    link, stores = open_link(_data_dir(args), keystore, settings, currency=0)
    try:
        yield link
    finally:
        link.close()
        stores.close()


def _sync_command(args: argparse.Namespace) -> int:
    keystore = _open_keystore(args)
    with (
        _acquirer_client(args, keystore) as client,
        _payment_link(args, keystore, client) as link,
        _open_keyed(args, keystore, create=False) as queue,
    ):
        forwarder = Forwarder(
            queue, AcquirerUplink(link), batch_size=args.batch_size, backoff=Backoff()
        )
        report = forwarder.sync(max_failures=args.max_failures, progress=ProgressBar(sys.stdout))
        flagged = queue.status().flagged
    print(
        f"accepted {report.accepted}, declined {report.declined}, failed {report.failed}, "
        f"still waiting {report.remaining}"
    )
    if report.duplicates:
        print(
            f"{report.duplicates} payment(s) the host already had (duplicates, sent before by "
            "this unit or the one that replaced it): not paid again"
        )
    if report.declined or flagged:
        print(f"{flagged} payment(s) need attention: `pipos queue list --flagged`")
    if report.remaining:
        print(f"not finished: {report.last_error or 'host unavailable'}", file=sys.stderr)
        return 1
    return 0
