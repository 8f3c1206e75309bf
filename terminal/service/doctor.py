"""`pipos doctor`: is this terminal able to take payments, and if not, what to do about it.

Every check passes, warns or fails, and says the fix. Checks: configuration; each reader and
scanner on every stack (PC/SC, nfcpy USB and UART, serial) with permission problems explained
(pcscd not running, udev rule missing, user not in the group the rule grants, ModemManager
grabbing a scanner, a kernel driver holding a PN533); clock sanity and skew against the host;
host reachability and TLS; the host key; the device-secret provider (a TPM that answers and
unseals, the Pi's OTP key, or a file: development only, warned) and the keystore it opens (an
older, unauthenticated format warned); the installed
parameters (signature, expired CA keys); database integrity and size; free disk; offline
queue backlog; the audit log's hash chain; the technician credential; the merchant PIN and
the register token as `pipos run --config` reads them (a check passes only when the start
would). A provisioned terminal whose configured reader or scanner is simulated (`sim:`,
`replay:`, nfcpy's `udp` device) gets a warning: it takes no real payments with it. PC/SC
(pcscd) fails only when the terminal uses it: with another reader configured a stopped pcscd
is a warning. The fix for a stopped pcscd is the one `pipos readers` prints
(drivers.errors.PCSCD_FIX).

Everything that touches the machine is injectable (:class:`Environment`) so each situation is
testable without the hardware or the permissions it describes.
"""

from __future__ import annotations

import datetime
import grp
import ipaddress
import os
import pwd
import re
import shutil
import socket
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlparse

import httpx

from drivers.discovery import DeviceEntry, discover
from drivers.errors import PCSCD_FIX
from offline_queue.errors import QueueError
from offline_queue.sqlite import Faults, SqliteFile

from ..acquirer.client import TlsOptions
from ..domain.errors import TerminalError
from ..security import merchant_pin
from ..security.merchant_pin import MerchantPin, MerchantPinError
from ..store.audit import AuditLog, verify_audit_log
from ..store.keys import Keystore, KeystoreTamperedError, WrongSecretError
from .config import TerminalConfig, load_config
from .provision import (
    QUEUE_FILE,
    ParametersRefusedError,
    ProvisionError,
    load_installed_parameters,
    queue_backlog,
    refuse_if_exported,
)

__all__ = ["Check", "DoctorReport", "Environment", "run_doctor"]

Status = Literal["pass", "warn", "fail"]

UDEV_DIRS: Final = (Path("/etc/udev/rules.d"), Path("/run/udev/rules.d"), Path("/lib/udev/rules.d"))
RULES_FIX: Final = (
    "sudo cp packaging/udev/60-pipos.rules /etc/udev/rules.d/ && "
    "sudo udevadm control --reload && sudo udevadm trigger, then replug the reader"
)
MAX_SKEW: Final = 300  # the host refuses signed requests outside +-300 s (docs/protocol.md)
EARLIEST_SANE: Final = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
#: Device URL schemes the simulator stands behind (the `sim` extra); never a terminal's device.
SIMULATED_SCHEMES: Final = frozenset({"sim", "replay"})
_REAL_DEVICES: Final = {
    "reader": "e.g. pcsc: or nfc:usb",
    "scanner": "e.g. serial:/dev/serial/by-id/...",
}


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    message: str
    fix: str = ""


@dataclass(frozen=True)
class DoctorReport:
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    def counts(self) -> dict[str, int]:
        out = {"pass": 0, "warn": 0, "fail": 0}
        for c in self.checks:
            out[c.status] += 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "summary": self.counts(),
            "checks": [asdict(c) for c in self.checks],
        }

    def lines(self) -> list[str]:
        out = []
        for c in self.checks:
            out.append(f"{c.status.upper():<4}  {c.name:<24} {c.message}")
            if c.fix and c.status != "pass":
                out.append(f"{'':<30} fix: {c.fix}")
        counts = self.counts()
        out.append(f"{counts['pass']} passed, {counts['warn']} warning(s), {counts['fail']} failed")
        return out


def _user_name() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _user_groups() -> set[str]:
    names = set()
    for gid in {os.getegid(), *os.getgroups()}:
        try:
            names.add(grp.getgrgid(gid).gr_name)
        except KeyError:
            names.add(str(gid))
    return names


@dataclass
class Environment:
    """What the doctor looks at; tests replace any of it."""

    devices: Callable[[], list[DeviceEntry]] = discover
    udev_dirs: Sequence[Path] = UDEV_DIRS
    access: Callable[[str, int], bool] = os.access
    user: Callable[[], str] = _user_name
    groups: Callable[[], set[str]] = _user_groups
    sys_module: Path = Path("/sys/module")
    now: Callable[[], float] = time.time
    disk_usage: Callable[[str], Any] = shutil.disk_usage
    transport: httpx.BaseTransport | None = None


# --- devices -------------------------------------------------------------------------------


def _udev_rules(env: Environment) -> list[str]:
    lines: list[str] = []
    for directory in env.udev_dirs:
        try:
            files = sorted(directory.glob("*.rules"))
        except OSError:
            continue
        for path in files:
            try:
                lines.extend(path.read_text(errors="replace").splitlines())
            except OSError:
                continue
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _rule_for(rules: list[str], vendor: int, product: int) -> str | None:
    v, p = f'"{vendor:04x}"', f'"{product:04x}"'
    for line in rules:
        low = line.lower().replace(" ", "")
        if f"attrs{{idvendor}}=={v}" in low and f"attrs{{idproduct}}=={p}" in low:
            return line
    return None


def _group_in(rule: str) -> str | None:
    match = re.search(r'GROUP\s*=\s*"([^"]+)"', rule)
    return match.group(1) if match else None


def _nfc_permission(entry: DeviceEntry, env: Environment) -> Check:
    match = re.match(r"nfc:usb:([0-9a-f]{4}):([0-9a-f]{4})", entry.url)
    name = f"reader {entry.description}"
    if match is None:
        return Check(name, "fail", entry.problem, entry.fix)
    vendor, product = int(match.group(1), 16), int(match.group(2), 16)
    rule = _rule_for(_udev_rules(env), vendor, product)
    if rule is None:
        return Check(
            name,
            "fail",
            f"{entry.problem}: no udev rule gives the terminal access to "
            f"{vendor:04x}:{product:04x}",
            RULES_FIX,
        )
    group = _group_in(rule)
    if group and group not in env.groups():
        return Check(
            name,
            "fail",
            f"{entry.problem}: the udev rule grants group '{group}', and user "
            f"'{env.user()}' is not in it",
            f"sudo usermod -aG {group} {env.user()}, then restart the service",
        )
    return Check(
        name,
        "fail",
        f"{entry.problem} although a udev rule exists (applied before it was installed?)",
        "sudo udevadm trigger, or replug the reader",
    )


def _serial_permission(name: str, problem: str, env: Environment) -> Check:
    if "dialout" not in env.groups():
        return Check(
            name,
            "fail",
            f"{problem}: user '{env.user()}' is not in group 'dialout'",
            f"sudo usermod -aG dialout {env.user()}, then restart the service",
        )
    return Check(
        name,
        "fail",
        f"{problem} although user '{env.user()}' is in 'dialout' (group added after login?)",
        "restart the service (or log in again) so the new group applies",
    )


def _uses_pcsc(config: TerminalConfig | None) -> bool:
    """Whether the terminal takes cards through pcscd: its configured reader is a `pcsc:`
    one, or none is configured (a provisioned terminal's default reader is `pcsc:`)."""
    url = config.reader_url if config else None
    return not url or url.partition(":")[0].lower() == "pcsc"


def _pcsc_check(entry: DeviceEntry, config: TerminalConfig | None) -> Check:
    """PC/SC is not usable: a failure when the terminal reads cards through it, else a
    warning (another reader is configured: a simulated one, nfcpy)."""
    daemon = "pcscd" in (entry.problem + entry.fix).lower() or "service" in entry.problem
    message = f"pcscd is not running ({entry.problem})" if daemon else entry.problem
    fix = PCSCD_FIX if daemon else entry.fix
    reader = config.reader_url if config else None
    if not reader or _uses_pcsc(config):
        return Check("PC/SC", "fail", message, fix)
    return Check(
        "PC/SC",
        "warn",
        f"{message}; the configured reader {reader} does not use it",
        f"only for a PC/SC reader: {fix}",
    )


def _device_checks(config: TerminalConfig | None, env: Environment) -> list[Check]:
    checks: list[Check] = []
    entries = env.devices()
    for entry in entries:
        if entry.stack == "pcsc" and entry.status != "ready":
            checks.append(_pcsc_check(entry, config))
        elif entry.status == "ready":
            checks.append(Check(f"{entry.kind} {entry.description}", "pass", f"ready: {entry.url}"))
        elif entry.stack == "nfc":
            checks.append(_nfc_permission(entry, env))
        elif entry.stack == "serial":
            checks.append(_serial_permission(f"scanner {entry.description}", entry.problem, env))
        else:
            checks.append(Check(entry.description, "fail", entry.problem, entry.fix))
    nfc_usb = [e for e in entries if e.stack == "nfc"]
    holders = [m for m in ("pn533_usb", "pn533") if (env.sys_module / m).exists()]
    if holders and any("PN533" in e.description or "SCL3711" in e.description for e in nfc_usb):
        checks.append(
            Check(
                "kernel NFC driver",
                "fail",
                f"kernel module {holders[0]} holds the reader, nfcpy cannot open it",
                "echo 'blacklist pn533_usb' | sudo tee /etc/modprobe.d/pipos-nfc.conf; "
                f"sudo modprobe -r {holders[0]}",
            )
        )
    readers = [e for e in entries if e.kind == "card reader" and e.status == "ready"]
    configured = config.reader_url if config else None
    provisioned = config is not None and config.provisioned
    if configured:
        checks.append(_configured_reader(configured, entries, env, provisioned=provisioned))
    elif not readers:
        checks.append(
            Check(
                "card reader",
                "warn",
                "no card reader found",
                "plug in a supported reader (ACR122U, ACR1252U, PN533, SCL3711) and run "
                "`pipos readers`; set [devices] reader in the configuration",
            )
        )
    if config and config.scanner_url:
        checks.append(_configured_scanner(config.scanner_url, env, provisioned=provisioned))
    return checks


def _simulated(name: str, url: str, what: str, *, provisioned: bool) -> Check:
    """A simulated device: fine on a development configuration, a warning on a provisioned
    terminal (it would wait for cards or codes that only the simulator can present)."""
    if not provisioned:
        return Check(name, "pass", f"{url} is simulated")
    return Check(
        name,
        "warn",
        f"{url} is a simulated {what}: this provisioned terminal takes no real payments with it",
        f"set [devices] {what} in the configuration to the terminal's own {what} "
        f"({_REAL_DEVICES[what]}; `pipos readers` lists what is attached), or re-run "
        f"pipos provision with --{what} URL",
    )


def _tty_check(name: str, device: str, env: Environment, fix_missing: str) -> Check:
    if not Path(device).exists():
        return Check(name, "fail", f"{device} does not exist", fix_missing)
    if not env.access(device, os.R_OK | os.W_OK):
        return _serial_permission(name, f"no read/write permission on {device}", env)
    return Check(name, "pass", f"{device} present and accessible")


def _configured_reader(
    url: str, entries: list[DeviceEntry], env: Environment, *, provisioned: bool
) -> Check:
    name = "configured reader"
    scheme, _, rest = url.partition(":")
    if scheme in SIMULATED_SCHEMES or (scheme == "nfc" and rest.startswith("udp")):
        return _simulated(name, url, "reader", provisioned=provisioned)
    if scheme == "nfc" and rest.startswith("tty:"):
        # nfcpy's UART path: tty:AMA0:pn532 means /dev/ttyAMA0 (a PN532 on the Pi's UART).
        port = rest.split(":")[1] if rest.count(":") >= 1 else ""
        device = port if port.startswith("/") else f"/dev/tty{port}"
        return _tty_check(
            name,
            device,
            env,
            "enable the UART (enable_uart=1 in /boot/firmware/config.txt) and turn the serial "
            "console off (raspi-config > Interface > Serial), then reboot",
        )
    wanted = url.lower()
    for entry in entries:
        if entry.kind != "card reader":
            continue
        if entry.url.lower().startswith(wanted) or wanted.startswith(entry.url.lower()):
            if entry.status == "ready":
                return Check(name, "pass", f"{url} found: {entry.description}")
            return Check(name, "fail", f"{url}: {entry.problem}", entry.fix)
        if scheme == "pcsc" and rest and rest.lower() in entry.url.lower():
            return Check(name, "pass", f"{url} found: {entry.description}")
    return Check(
        name,
        "fail",
        f"{url} is not attached (or not visible to user '{env.user()}')",
        "check the cable; `pipos readers` lists what is visible; correct [devices] reader",
    )


def _configured_scanner(url: str, env: Environment, *, provisioned: bool) -> Check:
    name = "configured scanner"
    if url.partition(":")[0] in SIMULATED_SCHEMES:
        return _simulated(name, url, "scanner", provisioned=provisioned)
    if not url.startswith("serial:"):
        return Check(name, "pass", f"{url} is not a serial device")
    device = urlparse(url[len("serial:") :]).path or url[len("serial:") :]
    check = _tty_check(name, device, env, "check the cable; /dev/serial/by-id lists scanners")
    if check.status != "pass":
        return check
    real = os.path.realpath(device)
    if "ttyACM" in real and not any("ID_MM_DEVICE_IGNORE" in r for r in _udev_rules(env)):
        return Check(
            name,
            "warn",
            f"{device} is a ttyACM device and no udev rule keeps ModemManager off it",
            RULES_FIX,
        )
    return check


# --- host, clock ---------------------------------------------------------------------------


def _host_checks(config: TerminalConfig, env: Environment) -> list[Check]:
    checks: list[Check] = []
    url = config.host_url.rstrip("/")
    parsed = urlparse(url)
    tls = TlsOptions(config.ca_file, config.client_cert, config.client_key)
    try:
        verify: Any = tls.context() if parsed.scheme == "https" else True
    except (OSError, ValueError) as exc:
        return [Check("host TLS", "fail", f"TLS files unusable: {exc}", "fix [acquirer] ca_file")]
    try:
        with httpx.Client(verify=verify, timeout=5.0, transport=env.transport) as http:
            response = http.get(url + "/v1/host-key")
    except httpx.ConnectError as exc:
        text = str(exc)
        if "CERTIFICATE" in text.upper() or "SSL" in text.upper():
            return [
                Check(
                    "host TLS",
                    "fail",
                    f"TLS handshake with {parsed.netloc} failed: {text}",
                    "check [acquirer] ca_file is the acquirer's CA, and the clock is right",
                )
            ]
        return [
            Check(
                "host reachable",
                "fail",
                f"cannot connect to {parsed.netloc}: {text}",
                "check the network cable/Wi-Fi, DNS and that the acquirer URL is right; "
                "payments are queued offline meanwhile",
            )
        ]
    except httpx.HTTPError as exc:
        return [Check("host reachable", "fail", f"{url}: {type(exc).__name__}: {exc}", "")]
    checks.append(Check("host reachable", "pass", f"{url} answered HTTP {response.status_code}"))
    if parsed.scheme == "https":
        checks.append(Check("host TLS", "pass", "certificate verified"))
    elif _is_loopback(parsed.hostname or ""):
        checks.append(Check("host TLS", "pass", "plain HTTP on loopback (simulated host)"))
    else:
        checks.append(
            Check(
                "host TLS",
                "warn",
                f"plain HTTP to {parsed.netloc}: requests are signed but not confidential",
                "use the acquirer's https:// URL (re-run pipos provision with it)",
            )
        )
    try:
        key_id = response.json().get("host_key_id")
    except ValueError:
        key_id = None
    if config.host_key_id and key_id and key_id != config.host_key_id:
        checks.append(
            Check(
                "host key",
                "fail",
                f"the host presents key {key_id}, the terminal enrolled with {config.host_key_id}",
                "confirm with the acquirer that its key changed, then re-provision",
            )
        )
    elif key_id:
        checks.append(Check("host key", "pass", f"{key_id}"))
    date = response.headers.get("date")
    if date:
        try:
            host_time = parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError):
            host_time = None
        if host_time is not None:
            skew = int(env.now() - host_time)
            if abs(skew) > MAX_SKEW:
                checks.append(
                    Check(
                        "clock skew",
                        "fail",
                        f"local clock is {skew:+d} s off the host's; signed requests are refused",
                        "sudo timedatectl set-ntp true (systemd-timesyncd), check NTP reachable",
                    )
                )
            elif abs(skew) > 30:
                checks.append(
                    Check("clock skew", "warn", f"{skew:+d} s off the host", "enable NTP")
                )
            else:
                checks.append(Check("clock skew", "pass", f"{skew:+d} s off the host"))
    return checks


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _clock_check(env: Environment) -> Check:
    now = datetime.datetime.fromtimestamp(env.now(), datetime.UTC)
    if now < EARLIEST_SANE:
        return Check(
            "clock",
            "fail",
            f"system time {now:%Y-%m-%d %H:%M}Z is in the past (no RTC, no NTP yet?)",
            "sudo timedatectl set-ntp true; wait for sync (timedatectl status)",
        )
    return Check("clock", "pass", f"{now:%Y-%m-%d %H:%M:%S}Z")


# --- local state ---------------------------------------------------------------------------


def _iso8583_checks(config: TerminalConfig, keystore: Keystore | None) -> list[Check]:
    """The ISO 8583 link (acquirer.protocol = "iso8583"): its profile, its keys, and an
    echo test (0800, 301) under the session key, the host's 0810 checked as every answer is.
    Without a session key it only connects: a key exchange from here would change the keys
    under a running terminal."""
    from ..acquirer.client import AcquirerError
    from ..acquirer.iso8583.link import SECRET_MAC_KEY, SECRET_TMK
    from ..acquirer.iso8583.profile import default_profile
    from ..acquirer.iso8583.settings import open_link
    from .config import iso8583_settings

    try:
        settings = iso8583_settings(config)
    except TerminalError as exc:
        return [Check("ISO 8583 profile", "fail", str(exc), "fix iso8583.profile (its file)")]
    assert settings is not None
    where = f"{settings.host}:{settings.port}"
    checks = [
        Check(
            "ISO 8583 profile",
            "pass",
            (settings.profile or default_profile()).name,
        )
    ]
    if keystore is None:
        return [*checks, Check("ISO 8583 keys", "fail", "the keystore does not open", "")]
    if keystore.secret(SECRET_TMK) is None:
        return [
            *checks,
            Check(
                "ISO 8583 keys",
                "fail",
                "no terminal master key: the link cannot receive its session keys",
                "pipos provision --config ... --tmk-key-block BLOCK --kbpk-file FILE",
            ),
        ]
    if keystore.secret(SECRET_MAC_KEY) is None:
        checks.append(
            Check("ISO 8583 keys", "pass", "TMK loaded; session keys at the first connection")
        )
        try:
            with socket.create_connection((settings.host, settings.port), timeout=5.0):
                pass
        except OSError as exc:
            return [*checks, _iso8583_unreachable(where, exc)]
        return [*checks, Check("ISO 8583 host", "pass", f"{where} accepts connections")]
    checks.append(Check("ISO 8583 keys", "pass", "TMK and session keys loaded"))
    try:
        # The currency only fills an empty batch's 0500, which an echo test never sends.
        link, stores = open_link(config.data_dir, keystore, settings, currency=0)
    except TerminalError as exc:
        return [*checks, Check("ISO 8583 host", "fail", str(exc), "")]
    try:
        link.echo_test()
    except AcquirerError as exc:
        return [*checks, _iso8583_unreachable(where, exc)]
    finally:
        link.close()
        stores.close()
    return [*checks, Check("ISO 8583 host", "pass", f"{where} answered the echo test")]


def _iso8583_unreachable(where: str, exc: Exception) -> Check:
    return Check(
        "ISO 8583 host",
        "fail",
        f"{where}: {exc}",
        "check the network, and iso8583.address and ca_file in the configuration; payments "
        "are queued offline meanwhile",
    )


def _key_checks(config: TerminalConfig) -> tuple[list[Check], Keystore | None]:
    checks: list[Check] = []
    path = Keystore.path_in(config.data_dir)
    if not path.exists():
        return [
            Check(
                "keystore",
                "fail",
                f"{path} is missing: the terminal's keys and enrolment are in it",
                f"restore {path.name} from this unit's backup; without one, provision the "
                "terminal again (a new enrolment: pipos provision)",
            )
        ], None
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        checks.append(
            Check("keystore mode", "warn", f"{path} is mode {mode:o}", f"chmod 600 {path}")
        )
    secret_check, secret = _secret_check(config)
    checks.append(secret_check)
    if secret is None:
        checks.append(
            Check(
                "keystore",
                "fail",
                "cannot open it without the device secret",
                "fix the device secret (the check above)",
            )
        )
        return checks, None
    try:
        keystore = Keystore.open(config.data_dir, secret)
    except TerminalError as exc:
        checks.append(Check("keystore", "fail", str(exc), _keystore_fix(exc, path)))
        return checks, None
    if keystore.needs_upgrade:
        checks.append(
            Check(
                "keystore format",
                "warn",
                "an older keystore format: its identity block (terminal id, host key) is not "
                "authenticated under the device secret",
                "re-run pipos provision (it upgrades the keystore in place)",
            )
        )
    if keystore.terminal_id != config.terminal_id:
        checks.append(
            Check(
                "keystore",
                "fail",
                f"keystore is enrolled as {keystore.terminal_id}, configuration says "
                f"{config.terminal_id}",
                "re-run pipos provision",
            )
        )
    else:
        checks.append(
            Check("keystore", "pass", f"key {keystore.key_id} opens; terminal {config.terminal_id}")
        )
    return checks, keystore


def _keystore_fix(exc: TerminalError, path: Path) -> str:
    """The fix for what the keystore's own error says (the message and the fix agree)."""
    if isinstance(exc, WrongSecretError):
        return (
            "the device secret is not the one this keystore was made with: restore this "
            "unit's own device secret (a file: from its backup; a TPM or OTP key: on this "
            "unit's own board), or the keystore from the same unit's backup"
        )
    if isinstance(exc, KeystoreTamperedError):
        return (
            f"keep {path} as evidence and report it to the acquirer's security contact; "
            "restore the keystore from this unit's backup"
        )
    if isinstance(exc.__cause__, PermissionError) or "cannot read" in str(exc):
        return f"run as the terminal's user (pipos), who owns {path}"
    return f"restore {path.name} from this unit's backup"


def _secret_check(config: TerminalConfig) -> tuple[Check, bytes | None]:
    """Which provider gives the device secret, and whether it does (the TPM answers, unseals)."""
    name = "device secret"
    provider = config.secret_provider()
    try:
        described = provider.probe()
        secret = provider.load()
    except TerminalError as exc:
        return Check(
            name,
            "fail",
            f"{config.secret}: {exc}",
            "run as the terminal's user (pipos); restore the device secret file"
            if provider.development_only
            else "the keystore opens only with this unit's own device: fix what the message "
            "says (the device, its permissions)",
        ), None
    if provider.development_only:
        return Check(
            name,
            "warn",
            f"{config.secret}: {described}, on the same storage as the keystore "
            "(development only): a copy of the SD card opens the terminal's keys",
            "re-provision with --secret tpm (a TPM 2.0 module) or --secret rpi-otp "
            "(the Raspberry Pi's OTP key): pipos provision --secret tpm ...",
        ), secret
    return Check(name, "pass", f"{config.secret}: {described}; the secret is there"), secret


def _params_check(config: TerminalConfig, keystore: Keystore | None, env: Environment) -> Check:
    if keystore is None or keystore.host_public_key is None or config.terminal_id is None:
        return Check("parameters", "fail", "cannot check without the keystore", "")
    today = datetime.datetime.fromtimestamp(env.now(), datetime.UTC).date()
    try:
        installed = load_installed_parameters(
            config.params_path,
            host_public_key=keystore.host_public_key,
            terminal_id=config.terminal_id,
            serial=keystore.serial,
            today=today,
        )
    except ParametersRefusedError as exc:
        return Check("parameters", "fail", str(exc), "pipos params update")
    message = (
        f"version {installed.version}, {len(installed.params.aids)} application(s), "
        f"{len(installed.ca_keys)} CA key(s), signature verified"
    )
    if installed.refused_at_install:
        message += (
            f" (left out at installation, expired: {', '.join(installed.refused_at_install)})"
        )
    if installed.expired_since_install:
        labels = ", ".join(k.label() for k in installed.expired_since_install)
        return Check(
            "parameters", "warn", f"{message}; CA key(s) expired: {labels}", "pipos params update"
        )
    return Check("parameters", "pass", message)


def _merchant_pin_check(config: TerminalConfig, config_path: Path) -> Check:
    """The merchant PIN is set, as a hash, readable as `pipos run --config` reads it, and
    no clear copy of an older version is left."""
    data_dir = config.data_dir
    set_it = f"pipos merchant-pin set --config {config_path}"
    legacy = data_dir / merchant_pin.LEGACY_FILE
    if legacy.exists():
        return Check(
            "merchant PIN",
            "fail",
            f"{legacy} holds the merchant PIN in clear (an older version's file); the terminal "
            "refuses to start with it",
            f"{set_it} (stores a hash and deletes the clear file)",
        )
    path = data_dir / merchant_pin.FILE
    if not path.exists():
        return Check(
            "merchant PIN",
            "fail",
            f"not set ({path} is missing): the terminal does not start without it (refunds, "
            "voids and the end of day need it)",
            set_it,
        )
    # Read only: the credential's shape, as the start checks it (no PIN is tried).
    credential = MerchantPin(path, AuditLog(config.audit_path), device_key=b"")
    try:
        credential.read()
    except MerchantPinError as exc:
        return Check("merchant PIN", "fail", f"{exc}; the terminal refuses to start", set_it)
    return Check("merchant PIN", "pass", "set (scrypt hash, bound to this device)")


#: Where `pipos run --config` keeps the register's API token (terminal.api.stack).
REGISTER_TOKEN_FILE: Final = "register-token"  # noqa: S105 - a file name, not a secret


def _unit_export_check(config: TerminalConfig, config_path: Path) -> Check:
    """Whether this unit's offline queue went to a replacement (`pipos unit export`): then
    `pipos run --config` refuses to start it, and doctor says so before the start does."""
    try:
        refuse_if_exported(config, config_path)
    except ProvisionError as exc:
        return Check(
            "unit export",
            "fail",
            str(exc),
            f"retire this unit (the replacement sends its payments); an export made by "
            f"mistake: pipos unit reinstate --config {config_path}",
        )
    return Check("unit export", "pass", "this unit's offline queue is its own")


def _register_token_check(config: TerminalConfig, config_path: Path) -> Check:
    """The register's API token file, as `pipos run --config` reads it: made on the first
    start; once there, readable by the terminal's user only, or the start is refused."""
    path = config.data_dir / REGISTER_TOKEN_FILE
    name = "register token"
    try:
        info = path.stat()
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return Check(
            name,
            "pass",
            f"not made yet: pipos run --config {config_path} makes {path} (mode 600) on its "
            "first start on a loopback --bind and prints it for the register (on any other "
            "bind registers pair: pipos registers pair)",
        )
    except OSError as exc:
        return Check(
            name,
            "fail",
            f"{path}: cannot read ({exc.strerror}); the terminal refuses to start",
            f"run as the terminal's user (pipos), who owns {path}",
        )
    if stat.S_IMODE(info.st_mode) & (stat.S_IRWXG | stat.S_IRWXO):
        return Check(
            name,
            "fail",
            f"{path} is readable by group or others; the terminal refuses to start",
            f"chmod 600 {path}",
        )
    if not text:
        return Check(
            name,
            "fail",
            f"{path} is empty: no register can authenticate",
            f"rm {path}; the next pipos run --config {config_path} makes a new one (give it "
            "to the register)",
        )
    return Check(name, "pass", f"{path}, readable by the terminal's user only")


def _db_check(name: str, path: Path, *, required: bool) -> Check:
    if not path.exists():
        status: Status = "fail" if required else "pass"
        return Check(name, status, f"{path} not created yet", "")
    size = path.stat().st_size
    try:
        # Read-only, so the check changes nothing; opening runs the quick_check and fails on a
        # damaged file (or one locked past the busy timeout) with what is wrong and the path.
        SqliteFile(path, Faults(name, TerminalError), read_only=True).close()
    except TerminalError as exc:
        return Check(
            name,
            "fail",
            str(exc),
            "do not delete it: stop the service, copy the file, and move the queue to a new "
            "unit (pipos unit export) or restore a backup",
        )
    mib = size / 2**20
    if mib > 200:
        return Check(name, "warn", f"{path} is {mib:.0f} MiB", "run pipos sync; VACUUM later")
    return Check(name, "pass", f"integrity ok, {mib:.1f} MiB")


def _disk_check(directory: Path, env: Environment) -> Check:
    target = directory if directory.exists() else directory.parent
    try:
        usage = env.disk_usage(str(target))
    except OSError as exc:
        return Check("free disk", "fail", f"{target}: {exc.strerror}", "")
    free_mib = usage.free / 2**20
    if free_mib < 50:
        return Check(
            "free disk",
            "fail",
            f"{free_mib:.0f} MiB free on {target}: payments may not be stored",
            "free space: sudo journalctl --vacuum-size=50M; remove old files",
        )
    if free_mib < 200:
        return Check("free disk", "warn", f"{free_mib:.0f} MiB free on {target}", "free space")
    return Check("free disk", "pass", f"{free_mib:.0f} MiB free")


def _queue_check(config: TerminalConfig, env: Environment) -> Check:
    try:
        backlog = queue_backlog(config.data_dir)
    except (QueueError, OSError) as exc:  # damaged, locked, another version, unreadable
        return Check("queue backlog", "fail", f"cannot read the queue: {exc}", "")
    if backlog is None or backlog.count == 0:
        flagged = backlog.flagged if backlog else 0
        if flagged:
            return Check(
                "queue backlog",
                "warn",
                f"{flagged} payment(s) declined after the fact",
                "pipos queue list --flagged, and tell the merchant",
            )
        return Check("queue backlog", "pass", "no payments waiting")
    age = int(env.now()) - (backlog.oldest_created_at or int(env.now()))
    message = f"{backlog.count} payment(s) waiting, oldest {age // 60} min"
    if age > 3600:
        return Check(
            "queue backlog",
            "warn",
            message,
            "check the host checks above; pipos sync sends them now",
        )
    return Check("queue backlog", "pass", message)


def run_doctor(config_path: Path, env: Environment | None = None) -> DoctorReport:
    env = env or Environment()
    checks: list[Check] = []
    config: TerminalConfig | None = None
    try:
        config = load_config(config_path)
        checks.append(
            Check(
                "configuration",
                "pass" if config.provisioned else "fail",
                f"{config_path}: terminal {config.terminal_id or '(not provisioned)'}",
                "" if config.provisioned else "pipos provision --host URL --activation-code CODE",
            )
        )
    except TerminalError as exc:
        checks.append(
            Check(
                "configuration",
                "fail",
                str(exc),
                "pipos provision --host URL --activation-code CODE [--config PATH]",
            )
        )
    checks.extend(_device_checks(config, env))
    checks.append(_clock_check(env))
    if config is None:
        return DoctorReport(tuple(checks))
    checks.extend(_host_checks(config, env))
    key_checks, keystore = _key_checks(config)
    checks.extend(key_checks)
    if config.protocol == "iso8583":
        checks.extend(_iso8583_checks(config, keystore))
    checks.append(_params_check(config, keystore, env))
    checks.append(_merchant_pin_check(config, config_path))
    checks.append(_register_token_check(config, config_path))
    checks.append(_unit_export_check(config, config_path))
    checks.append(_db_check("queue database", config.data_dir / QUEUE_FILE, required=False))
    checks.append(
        _db_check("journal database", config.data_dir / "journal.sqlite3", required=False)
    )
    checks.append(_disk_check(config.data_dir, env))
    checks.append(_queue_check(config, env))
    audit = verify_audit_log(config.audit_path)
    if audit.ok:
        checks.append(Check("audit log", "pass", f"{audit.count} event(s), hash chain intact"))
    else:
        checks.append(
            Check(
                "audit log",
                "fail",
                f"line {audit.line}: {audit.problem}",
                "keep the file as evidence and report it to the acquirer's security contact",
            )
        )
    if config.technician_path.exists():
        checks.append(Check("technician credential", "pass", "set"))
    else:
        checks.append(
            Check(
                "technician credential",
                "warn",
                "not set: service operations cannot be authorised",
                "re-run pipos provision to set it",
            )
        )
    return DoctorReport(tuple(checks))
