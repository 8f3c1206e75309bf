"""The technician's commands: `pipos provision`, `pipos doctor`, `pipos params update`,
`pipos keys rotate`, `pipos unit export|import|reinstate` (replacing a unit without losing a
payment or sending one twice).

The configuration file is `--config` (default $PIPOS_CONFIG, else /etc/pipos/terminal.toml).
Service operations ask for the technician PIN or pass-phrase: `--technician-pin-file FILE`
(or $PIPOS_TECHNICIAN_PIN_FILE), else on the terminal.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Final

from ..acquirer.client import TlsOptions
from ..service.config import default_config_path
from ..service.doctor import run_doctor
from ..service.provision import Iso8583Provisioning, open_service_terminal, provision
from ..store.device_secret import DEFAULT_OTP_COMMAND, DEFAULT_TCTI, PROVIDERS
from .common import (
    ServiceCommandError,
    default_data_dir,
    read_secret_file,
    technician_secret,
)

__all__ = ["add_params_update", "install_sigterm_handler", "register"]


def install_sigterm_handler(grace: float = 3.0) -> None:
    """Make SIGTERM (systemctl stop) take the same path as Ctrl-C in `pipos run`, and stop
    the terminal within `grace` seconds whatever it is doing.

    The run loop then closes the terminal: a payment waiting for a card or a card being read
    (even a wedged card) is cancelled and recorded so at once, one being authorised gets what
    is left of the grace to finish (Checkout.close); the queue and journal are closed
    cleanly. If closing has not ended when the grace is up (a host that does not answer, a
    disk that hangs), the process exits anyway, as after a power cut: every write is durable
    and Checkout.recover() settles whatever was cut short at the next start (reversed if its
    authorisation may have reached the host, never assumed). A second SIGTERM while closing
    is ignored: it would only cut the close short.
    """

    def exit_now() -> None:
        sys.stderr.write(
            f"pipos: the terminal did not stop within {grace:g} s of SIGTERM; exiting now "
            "(what was cut short is settled at the next start)\n"
        )
        sys.stderr.flush()
        os._exit(1)

    def handler(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # A little short of the grace, so the process is gone within it.
        watchdog = threading.Timer(max(0.1, grace - 0.25), exit_now)
        watchdog.daemon = True
        watchdog.start()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="terminal configuration (default: $PIPOS_CONFIG or /etc/pipos/terminal.toml)",
    )


def _pin_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--technician-pin-file",
        type=Path,
        default=None,
        help="file holding the technician PIN or pass-phrase (default: "
        "$PIPOS_TECHNICIAN_PIN_FILE, else ask)",
    )


def _config_path(args: argparse.Namespace) -> Path:
    return Path(args.config) if args.config else default_config_path()


def _passphrase(args: argparse.Namespace, *, confirm: bool) -> bytes:
    if args.passphrase_file is not None:
        return read_secret_file(Path(args.passphrase_file), "passphrase").encode("utf-8")
    if not sys.stdin.isatty():
        raise ServiceCommandError("no passphrase: give --passphrase-file (stdin is not a terminal)")
    first = getpass.getpass("Backup passphrase: ")
    if confirm and getpass.getpass("Repeat the passphrase: ") != first:
        raise ServiceCommandError("the two passphrases differ; nothing was written")
    return first.encode("utf-8")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    prov = subparsers.add_parser(
        "provision",
        help="set up this terminal with its acquirer in one step",
        description="Generate the terminal key, enrol with the acquirer using the activation "
        "code, download and verify the signed parameters, write the configuration and print a "
        "summary. Safe to re-run: on a provisioned terminal it refreshes the parameters. "
        "Enrolling again (another host, or --force) is refused while payments wait in the "
        "offline queue, unless --force.",
    )
    prov.add_argument("--host", required=True, help="acquirer URL, e.g. https://acq.example:8600")
    prov.add_argument("--activation-code", required=True, help="one-time code from the acquirer")
    _config_arg(prov)
    prov.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="terminal data (default: the configured one, $PIPOS_DATA_DIR or ~/.local/share/pipos)",
    )
    prov.add_argument(
        "--secret",
        choices=PROVIDERS,
        default=None,
        help="where the device secret that opens the keystore lives: tpm (sealed to the TPM "
        "2.0), rpi-otp (derived from the Raspberry Pi's OTP private key) or file (development "
        "only: it travels with the SD card). Default: the configured one; a new terminal "
        "must be given one, except with a simulated acquirer on this machine (then file). A "
        "production terminal uses tpm or rpi-otp. Changing it moves the keystore over",
    )
    prov.add_argument(
        "--secret-file",
        type=Path,
        default=None,
        help="--secret file: the device secret, created if missing (default: "
        "DATA_DIR/device-secret)",
    )
    prov.add_argument(
        "--tpm-tcti",
        default=None,
        help=f"--secret tpm: how to reach the TPM (default {DEFAULT_TCTI}; e.g. "
        "swtpm:host=127.0.0.1,port=2321)",
    )
    prov.add_argument(
        "--otp-command",
        default=None,
        help="--secret rpi-otp: the command that prints the OTP key "
        f"(default {DEFAULT_OTP_COMMAND})",
    )
    prov.add_argument("--force", action="store_true", help="enrol again even with queued payments")
    prov.add_argument("--reader", help="card reader URL to configure, e.g. pcsc:ACR122")
    prov.add_argument("--scanner", help="code scanner URL, e.g. serial:/dev/serial/by-id/...")
    prov.add_argument("--ca-file", help="trust only this CA for the acquirer (PEM)")
    prov.add_argument("--client-cert", help="client certificate for mutual TLS (PEM)")
    prov.add_argument("--client-key", help="client certificate key (PEM)")
    prov.add_argument(
        "--host-key",
        metavar="ed25519:FINGERPRINT",
        help="pin the acquirer's host key: the fingerprint printed next to the activation "
        "code (ed25519: + 64 hex digits); needed to enrol unless --ca-file pins the CA",
    )
    prov.add_argument(
        "--allow-plain-http",
        action="store_true",
        help="allow an http:// acquirer URL, for a simulated acquirer on this machine only "
        "(127.0.0.1, ::1, localhost)",
    )
    iso = prov.add_argument_group(
        "ISO 8583 link",
        "payments over ISO 8583 to the acquiring host (docs/iso8583.md); enrolment and "
        "parameters stay on --host",
    )
    iso.add_argument(
        "--acquirer-protocol",
        choices=("pipos", "iso8583"),
        help="how payments reach the acquirer (default: as configured, else pipos)",
    )
    iso.add_argument("--iso8583-address", metavar="HOST:PORT", help="the ISO 8583 host")
    iso.add_argument("--iso8583-terminal-id", metavar="TID", help="field 41, as issued")
    iso.add_argument("--iso8583-merchant-id", metavar="MID", help="field 42, as issued")
    iso.add_argument(
        "--iso8583-profile", metavar="FILE", help="the acquirer's field specification (JSON)"
    )
    iso.add_argument("--iso8583-ca-file", help="TLS to the ISO 8583 host, its CA pinned (PEM)")
    iso.add_argument("--iso8583-client-cert", help="client certificate for that TLS (PEM)")
    iso.add_argument("--iso8583-client-key", help="its key (PEM)")
    iso.add_argument(
        "--tmk-key-block",
        metavar="BLOCK",
        help="the terminal master key as a TR-31 key block (usage K0), from the acquirer's "
        "key-injection facility",
    )
    iso.add_argument(
        "--kbpk-file",
        type=Path,
        metavar="FILE",
        help="the facility's key-block protection key the TMK block is under (hex, or the "
        'JSON {"kbpk": HEX} the simulator publishes); read, never stored',
    )
    _pin_arg(prov)
    prov.set_defaults(handler=_provision_command)

    doctor = subparsers.add_parser(
        "doctor",
        help="check readers, scanner, clock, host, keys, databases, disk and queue",
        description="Run every check; each passes, warns or fails with the fix to apply. "
        "Exit status 1 when any check fails.",
    )
    _config_arg(doctor)
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.set_defaults(handler=_doctor_command)

    keys = subparsers.add_parser("keys", help="the terminal's signing key")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="KEYS_COMMAND")
    keys_sub.required = True
    rotate = keys_sub.add_parser(
        "rotate",
        help="replace the terminal key (the host accepts the new one first)",
        description="Generate a new terminal key, have the acquirer accept it, then switch. "
        "Safe to interrupt and re-run.",
    )
    _config_arg(rotate)
    _pin_arg(rotate)
    rotate.set_defaults(handler=_rotate_command)

    unit = subparsers.add_parser(
        "unit",
        help="replace a unit: move its offline queue to the replacement",
        description="On the old unit: `pipos unit export FILE`. On the new, provisioned unit: "
        "`pipos unit import FILE`, then `pipos sync`. A payment the old unit already sent is "
        "recognised by the host and never paid twice. After the export the old unit refuses "
        "to run (`pipos unit reinstate` undoes a mistaken export).",
    )
    unit_sub = unit.add_subparsers(dest="unit_command", metavar="UNIT_COMMAND")
    unit_sub.required = True
    for name, text in (
        ("export", "write this unit's offline queue to an encrypted file"),
        ("import", "add an exported queue to this unit's queue"),
    ):
        cmd = unit_sub.add_parser(name, help=text, description=text)
        cmd.add_argument("file", type=Path, help="backup file")
        _config_arg(cmd)
        _pin_arg(cmd)
        cmd.add_argument(
            "--passphrase-file", type=Path, default=None, help="backup passphrase (default: ask)"
        )
        cmd.set_defaults(handler=_unit_export if name == "export" else _unit_import)
    reinstate = unit_sub.add_parser(
        "reinstate",
        help="undo `pipos unit export` on this unit, so it runs again",
        description="After `pipos unit export` this unit refuses to run (its payments are the "
        "replacement's to send). If the export was a mistake, this lets it run again. A "
        "payment both units send is recognised by the host and never paid twice.",
    )
    _config_arg(reinstate)
    _pin_arg(reinstate)
    reinstate.set_defaults(handler=_unit_reinstate)


def add_params_update(params_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`pipos params update`, hung under the existing `pipos params` command."""
    update = params_sub.add_parser(
        "update",
        help="download, verify and install the acquirer's current parameters",
        description="Download the host-signed parameters, check them (signature, check sums, "
        "expired CA keys left out) and replace the installed ones atomically; on any problem "
        "the installed parameters stay in use. Prints what changed: the terminal's data "
        "(language, currency, ...), each application added, removed or changed (each changed "
        "kernel data object by tag and name, limits in money), offline acceptance, QR codes, "
        "CA keys. The content is compared, not only the version: a version re-issued with "
        "other content is installed and said so.",
    )
    _config_arg(update)
    _pin_arg(update)
    update.add_argument(
        "--json", action="store_true", help="machine-readable output: versions and changes"
    )
    update.set_defaults(handler=_params_update_command)


# --- handlers ------------------------------------------------------------------------------


def _provision_command(args: argparse.Namespace) -> int:
    config_path = _config_path(args)
    data_dir = args.data_dir
    if data_dir is None and not config_path.exists():
        data_dir = default_data_dir()
    secret_file = args.secret_file
    if (
        secret_file is None
        and args.secret in (None, "file")
        and os.environ.get("PIPOS_DEVICE_SECRET_FILE")
    ):
        secret_file = Path(os.environ["PIPOS_DEVICE_SECRET_FILE"])
    tls = None
    if args.ca_file or args.client_cert:
        tls = TlsOptions(args.ca_file, args.client_cert, args.client_key)
    first_time = (
        not ((data_dir or Path()) / "technician.json").exists() and not config_path.exists()
    )
    result = provision(
        acquirer_protocol=args.acquirer_protocol,
        iso8583=_iso8583_provisioning(args),
        host_url=args.host,
        activation_code=args.activation_code,
        config_path=config_path,
        technician_secret=technician_secret(args, confirm=first_time),
        data_dir=data_dir,
        secret_file=secret_file,
        secret_provider=args.secret,
        tpm_tcti=args.tpm_tcti,
        otp_command=args.otp_command,
        force=args.force,
        tls=tls,
        reader_url=args.reader,
        scanner_url=args.scanner,
        host_key=args.host_key,
        allow_plain_http=args.allow_plain_http,
    )
    for line in result.summary_lines():
        print(line)
    return 0


_ISO8583_OPTIONS: Final = (
    "iso8583_address",
    "iso8583_terminal_id",
    "iso8583_merchant_id",
    "iso8583_profile",
    "iso8583_ca_file",
    "iso8583_client_cert",
    "iso8583_client_key",
    "tmk_key_block",
    "kbpk_file",
)


def _iso8583_provisioning(args: argparse.Namespace) -> Iso8583Provisioning | None:
    """The ISO 8583 link's options as typed (None: none given)."""
    if not any(getattr(args, name) for name in _ISO8583_OPTIONS):
        return None
    missing = [
        "--" + name.replace("_", "-")
        for name in ("iso8583_address", "iso8583_terminal_id", "iso8583_merchant_id")
        if not getattr(args, name)
    ]
    if missing:
        raise ServiceCommandError(f"the ISO 8583 link also needs {', '.join(missing)}")
    return Iso8583Provisioning(
        address=args.iso8583_address,
        terminal_id=args.iso8583_terminal_id,
        merchant_id=args.iso8583_merchant_id,
        tmk_key_block=args.tmk_key_block or "",
        kbpk=_kbpk(args.kbpk_file) if args.kbpk_file else b"",
        profile=args.iso8583_profile,
        ca_file=args.iso8583_ca_file,
        client_cert=args.iso8583_client_cert,
        client_key=args.iso8583_client_key,
    )


def _kbpk(path: Path) -> bytes:
    """The key-block protection key in `path`: hex digits, or JSON with its hex in "kbpk"."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ServiceCommandError(f"--kbpk-file {path}: cannot be read ({exc.strerror})") from exc
    if text.startswith("{"):
        try:
            text = str(json.loads(text)["kbpk"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ServiceCommandError(
                f'--kbpk-file {path}: JSON without a "kbpk" of hex digits'
            ) from exc
    try:
        key = bytes.fromhex(text)
    except ValueError as exc:
        raise ServiceCommandError(f"--kbpk-file {path}: not hex digits") from exc
    if len(key) not in (16, 24, 32):
        raise ServiceCommandError(
            f"--kbpk-file {path}: a key-block protection key is 16, 24 or 32 bytes, not {len(key)}"
        )
    return key


def _doctor_command(args: argparse.Namespace) -> int:
    report = run_doctor(_config_path(args))
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        for line in report.lines():
            print(line)
    return 0 if report.ok else 1


def _params_update_command(args: argparse.Namespace) -> int:
    terminal = open_service_terminal(_config_path(args))
    update = terminal.update_parameters(technician_secret(args))
    if args.json:
        print(json.dumps(update.to_json(), indent=2, ensure_ascii=False))
        return 0
    for line in update.summary_lines():
        print(line)
    return 0


def _rotate_command(args: argparse.Namespace) -> int:
    terminal = open_service_terminal(_config_path(args))
    old, new = terminal.rotate_key(technician_secret(args))
    print(f"terminal key rotated: {old} -> {new}")
    return 0


def _unit_export(args: argparse.Namespace) -> int:
    if Path(args.file).exists():
        raise ServiceCommandError(f"{args.file}: already exists; choose another file name")
    terminal = open_service_terminal(_config_path(args))
    secret = technician_secret(args)
    result = terminal.export_queue(secret, args.file, _passphrase(args, confirm=True))
    print(
        f"exported {result.count} payment(s) still to be sent from terminal "
        f"{terminal.config.terminal_id} to {args.file} (encrypted; keep the passphrase apart). "
        "This unit now refuses to run: import the file on the replacement and run "
        "`pipos sync` there (a mistaken export is undone with `pipos unit reinstate`)."
    )
    return 0


def _unit_reinstate(args: argparse.Namespace) -> int:
    config_path = _config_path(args)
    terminal = open_service_terminal(config_path)
    record = terminal.reinstate(technician_secret(args))
    print(
        f"terminal {terminal.config.terminal_id} reinstated: it runs again (its queue had been "
        f"exported to {record.get('file')}). If that file was imported on another unit too, "
        "the host answers the payments it already has as duplicates; none is paid twice."
    )
    return 0


def _unit_import(args: argparse.Namespace) -> int:
    if not Path(args.file).is_file():
        raise ServiceCommandError(f"{args.file}: no such file")
    terminal = open_service_terminal(_config_path(args))
    secret = technician_secret(args)
    result = terminal.import_queue(secret, args.file, _passphrase(args, confirm=False))
    print(
        f"imported {result.added} payment(s) into terminal {terminal.config.terminal_id}; "
        f"{result.already_present} already here. Send them with `pipos sync`."
    )
    if result.conflicts:
        print(
            f"{len(result.conflicts)} payment(s) NOT imported (a different payment with the "
            f"same id is queued): {', '.join(result.conflicts)}",
            file=sys.stderr,
        )
        return 1
    return 0
