"""The terminal configuration file: /etc/pipos/terminal.toml (or a path given).

Written by `pipos provision`, read by `pipos doctor`, `pipos params update`, `pipos keys
rotate` and the service. It holds where things are and who the terminal is, and which
device-secret provider opens the keystore (:mod:`terminal.store.device_secret`: ``tpm``,
``rpi-otp``, or ``file``, for development only). It holds no secret itself, but it maps the
terminal's secrets and names its acquirer, so it is written 0600 whatever the umask, like every
file the service layer writes::

    [terminal]
    terminal_id = "T0A1B2C3D4E"
    merchant_id = "M0001"
    serial = "PIPOS-1A2B3C4D5E6F"
    provisioned_at = 1735689600

    [acquirer]
    url = "https://acquirer.example:8600"
    host_key_id = "ed25519:..."
    ca_file = "/etc/pipos/acquirer-ca.pem"      # optional: pin the host's CA

    protocol = "pipos"                   # or "iso8583": payments over the [iso8583] link

    [iso8583]                            # only with protocol = "iso8583" (docs/iso8583.md)
    address = "iso.acquirer.example:5000"
    terminal_id = "T0A1B2C3"             # field 41, as the acquirer issued it
    merchant_id = "M-DEMO-0001"          # field 42
    profile = "/etc/pipos/acquirer-spec.json"  # optional: the acquirer's field specification
    ca_file = "/etc/pipos/iso-ca.pem"    # optional: TLS, the host's CA pinned
    echo_interval = 60                   # optional: seconds idle before an echo test

    [storage]
    data_dir = "/var/lib/pipos"
    secret = "tpm"                       # or "rpi-otp", or "file" (development only)
    tpm_tcti = "device:/dev/tpmrm0"      # tpm: how to reach the TPM (default shown)
    # otp_command = "rpi-otp-private-key"  rpi-otp: the command that prints the OTP key
    # secret_file = "/etc/pipos/device-secret"  file: the device secret file (required)

    [parameters]
    version = 3
    issued_at = 1735689600

    [devices]
    reader = "pcsc:ACR122"
    scanner = "serial:/dev/serial/by-id/usb-Honeywell-if00"

    [checkout]
    tips = "10,15,20"                    # optional: tip entry on, these presets in percent
    tip_custom = true                    # the customer may type a tip (default true)

Read with :mod:`tomllib`; written atomically (temporary file, fsync, rename, directory fsync)
by a small writer for the flat tables above, so a crash never leaves half a configuration.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from ..acquirer.client import TlsOptions
from ..acquirer.iso8583.profile import load_profile
from ..acquirer.iso8583.settings import Iso8583Settings
from ..domain.errors import ConfigurationError
from ..domain.tips import TipSettings
from ..store.device_secret import PROVIDERS, DeviceSecretProvider, make_provider
from ..store.keys import atomic_write

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_PATH",
    "ConfigError",
    "TerminalConfig",
    "default_config_path",
    "dump_config",
    "iso8583_settings",
    "load_config",
    "save_config",
]

DEFAULT_CONFIG_PATH: Final = Path("/etc/pipos/terminal.toml")
CONFIG_ENV: Final = "PIPOS_CONFIG"
PARAMS_FILE: Final = "parameters.json"
AUDIT_FILE: Final = "audit.log"
TECHNICIAN_FILE: Final = "technician.json"


class ConfigError(ConfigurationError):
    """The configuration file is missing, unreadable or has a wrong field (named)."""


def default_config_path() -> Path:
    """$PIPOS_CONFIG, else /etc/pipos/terminal.toml."""
    env = os.environ.get(CONFIG_ENV)
    return Path(env) if env else DEFAULT_CONFIG_PATH


@dataclass(frozen=True)
class TerminalConfig:
    host_url: str
    data_dir: Path
    #: The device secret file; only with ``secret = "file"`` (where it is required).
    secret_file: Path | None = None
    #: The device-secret provider: "tpm", "rpi-otp" or "file" (development only).
    secret: str = "file"  # noqa: S105 (a provider's name, not a secret)
    tpm_tcti: str | None = None
    otp_command: str | None = None
    terminal_id: str | None = None
    merchant_id: str | None = None
    serial: str | None = None
    provisioned_at: int | None = None
    host_key_id: str | None = None
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    params_version: int | None = None
    params_issued_at: int | None = None
    reader_url: str | None = None
    scanner_url: str | None = None
    #: Tip entry's presets as written ("10,15,20"); None: tip entry off.
    tips: str | None = None
    tip_custom: bool | None = None
    #: How payments reach the acquirer: "pipos" (docs/protocol.md) or "iso8583" (the
    #: [iso8583] table; enrolment and parameters stay on the pipos protocol's host).
    acquirer_protocol: str | None = None
    iso8583_address: str | None = None
    iso8583_terminal_id: str | None = None
    iso8583_merchant_id: str | None = None
    iso8583_profile: str | None = None
    iso8583_ca_file: str | None = None
    iso8583_client_cert: str | None = None
    iso8583_client_key: str | None = None
    iso8583_echo_interval: int | None = None

    @property
    def protocol(self) -> str:
        return self.acquirer_protocol or "pipos"

    @property
    def tip_settings(self) -> TipSettings:
        """Tip entry as the file sets it (off without `checkout.tips`)."""
        if self.tips is None:
            return TipSettings()
        custom = True if self.tip_custom is None else self.tip_custom
        return TipSettings.parse(self.tips, custom=custom, source="checkout.tips")

    @property
    def provisioned(self) -> bool:
        return self.terminal_id is not None

    @property
    def params_path(self) -> Path:
        return self.data_dir / PARAMS_FILE

    @property
    def audit_path(self) -> Path:
        return self.data_dir / AUDIT_FILE

    @property
    def technician_path(self) -> Path:
        return self.data_dir / TECHNICIAN_FILE

    def with_changes(self, **changes: Any) -> TerminalConfig:
        return replace(self, **changes)

    def secret_provider(self) -> DeviceSecretProvider:
        """The provider that gives this terminal's device secret (opens its keystore)."""
        return make_provider(
            self.secret,
            data_dir=self.data_dir,
            secret_file=self.secret_file,
            tcti=self.tpm_tcti,
            otp_command=self.otp_command,
        )


# (table, key, attribute, type) in file order.
_FIELDS: Final[tuple[tuple[str, str, str, type], ...]] = (
    ("terminal", "terminal_id", "terminal_id", str),
    ("terminal", "merchant_id", "merchant_id", str),
    ("terminal", "serial", "serial", str),
    ("terminal", "provisioned_at", "provisioned_at", int),
    ("acquirer", "url", "host_url", str),
    ("acquirer", "host_key_id", "host_key_id", str),
    ("acquirer", "ca_file", "ca_file", str),
    ("acquirer", "client_cert", "client_cert", str),
    ("acquirer", "client_key", "client_key", str),
    ("acquirer", "protocol", "acquirer_protocol", str),
    ("iso8583", "address", "iso8583_address", str),
    ("iso8583", "terminal_id", "iso8583_terminal_id", str),
    ("iso8583", "merchant_id", "iso8583_merchant_id", str),
    ("iso8583", "profile", "iso8583_profile", str),
    ("iso8583", "ca_file", "iso8583_ca_file", str),
    ("iso8583", "client_cert", "iso8583_client_cert", str),
    ("iso8583", "client_key", "iso8583_client_key", str),
    ("iso8583", "echo_interval", "iso8583_echo_interval", int),
    ("storage", "data_dir", "data_dir", Path),
    ("storage", "secret", "secret", str),
    ("storage", "secret_file", "secret_file", Path),
    ("storage", "tpm_tcti", "tpm_tcti", str),
    ("storage", "otp_command", "otp_command", str),
    ("parameters", "version", "params_version", int),
    ("parameters", "issued_at", "params_issued_at", int),
    ("devices", "reader", "reader_url", str),
    ("devices", "scanner", "scanner_url", str),
    ("checkout", "tips", "tips", str),
    ("checkout", "tip_custom", "tip_custom", bool),
)
_REQUIRED: Final = {"host_url", "data_dir"}
#: Options that belong to one provider: (attribute, field, provider).
_PROVIDER_OPTIONS: Final = (
    ("secret_file", "secret_file", "file"),
    ("tpm_tcti", "tpm_tcti", "tpm"),
    ("otp_command", "otp_command", "rpi-otp"),
)


def parse_config(doc: Mapping[str, Any], source: str) -> TerminalConfig:
    """Build a configuration from decoded TOML; every wrong field is named in one error."""
    problems: list[str] = []
    values: dict[str, Any] = {}
    known_tables = {table for table, *_ in _FIELDS}
    for table in doc:
        if table not in known_tables:
            problems.append(f"[{table}]: unknown table (expected one of: {sorted(known_tables)})")
    for table, key, attr, kind in _FIELDS:
        section = doc.get(table, {})
        if not isinstance(section, dict):
            problems.append(f"[{table}]: expected a table")
            continue
        if key not in section:
            if attr in _REQUIRED:
                problems.append(f"{table}.{key}: missing required field")
            continue
        value = section[key]
        if kind is bool:
            if not isinstance(value, bool):
                problems.append(f"{table}.{key}: expected true or false, got {value!r}")
                continue
        elif kind is str and attr == "tips":
            if not isinstance(value, str):
                problems.append(f'{table}.{key}: expected presets in percent ("10,15,20")')
                continue
        elif kind is int:
            if not isinstance(value, int) or isinstance(value, bool):
                problems.append(f"{table}.{key}: expected an integer, got {value!r}")
                continue
        elif not isinstance(value, str) or not value:
            problems.append(f"{table}.{key}: expected a non-empty string, got {value!r}")
            continue
        values[attr] = Path(value) if kind is Path else value
    for table, section in doc.items():
        if isinstance(section, dict) and table in known_tables:
            allowed = {key for t, key, *_ in _FIELDS if t == table}
            for key in section:
                if key not in allowed:
                    problems.append(f"{table}.{key}: unknown field")
    kind = values.get("secret", "file")
    if kind not in PROVIDERS:
        problems.append(
            f"storage.secret: unknown device-secret provider {kind!r} (expected one of: "
            f"{', '.join(PROVIDERS)})"
        )
    else:
        if kind == "file" and "secret_file" not in values:
            problems.append('storage.secret_file: missing required field (for secret = "file")')
        for attr, key, owner in _PROVIDER_OPTIONS:
            if attr in values and kind != owner:
                problems.append(f'storage.{key}: only used with secret = "{owner}", not "{kind}"')
    if "tip_custom" in values and "tips" not in values:
        problems.append("checkout.tip_custom: only used with checkout.tips")
    problems += _iso8583_problems(values)
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))
    config = TerminalConfig(**values)
    try:
        config.tip_settings  # noqa: B018 (checked now, so a wrong preset fails the load)
    except ConfigurationError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    return config


#: The acquirer protocols a terminal speaks for payments.
PROTOCOLS: Final = ("pipos", "iso8583")
_ISO8583_REQUIRED: Final = ("iso8583_address", "iso8583_terminal_id", "iso8583_merchant_id")


def _iso8583_problems(values: Mapping[str, Any]) -> list[str]:
    """What is wrong with acquirer.protocol and the [iso8583] table, each named."""
    protocol = values.get("acquirer_protocol", "pipos")
    iso = sorted(k for k in values if k.startswith("iso8583_"))
    if protocol not in PROTOCOLS:
        return [f"acquirer.protocol: {protocol!r} is not one of {', '.join(PROTOCOLS)}"]
    if protocol != "iso8583":
        return [f'iso8583.{k[8:]}: only used with acquirer.protocol = "iso8583"' for k in iso]
    problems = [
        f'iso8583.{attr[8:]}: missing required field (for protocol = "iso8583")'
        for attr in _ISO8583_REQUIRED
        if attr not in values
    ]
    address = values.get("iso8583_address")
    if address is not None:
        host, _, port = str(address).rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            problems.append(f"iso8583.address: expected HOST:PORT, got {address!r}")
    tid = values.get("iso8583_terminal_id")
    if tid is not None and len(str(tid)) > 8:
        problems.append(f"iso8583.terminal_id: field 41 holds 8 characters, not {len(tid)}")
    mid = values.get("iso8583_merchant_id")
    if mid is not None and len(str(mid)) > 15:
        problems.append(f"iso8583.merchant_id: field 42 holds 15 characters, not {len(mid)}")
    interval = values.get("iso8583_echo_interval")
    if interval is not None and not 5 <= interval <= 3600:
        problems.append(f"iso8583.echo_interval: 5 to 3600 seconds, not {interval}")
    if ("iso8583_client_cert" in values) != ("iso8583_client_key" in values):
        problems.append("iso8583.client_cert and iso8583.client_key go together")
    return problems


def iso8583_settings(config: TerminalConfig) -> Iso8583Settings | None:
    """The configuration's ISO 8583 link (None: payments on the pipos protocol)."""
    if config.protocol != "iso8583":
        return None
    # The configuration file refuses an iso8583 protocol without these (parse_config).
    assert config.iso8583_address is not None
    assert config.iso8583_terminal_id is not None
    assert config.iso8583_merchant_id is not None
    address, _, port = config.iso8583_address.rpartition(":")
    tls = None
    if config.iso8583_ca_file or config.iso8583_client_cert:
        tls = TlsOptions(
            config.iso8583_ca_file, config.iso8583_client_cert, config.iso8583_client_key
        )
    return Iso8583Settings(
        host=address.strip("[]"),
        port=int(port),
        terminal_id=config.iso8583_terminal_id,
        merchant_id=config.iso8583_merchant_id,
        profile=load_profile(config.iso8583_profile) if config.iso8583_profile else None,
        tls=tls,
        echo_interval=float(config.iso8583_echo_interval or 60),
    )


def load_config(path: str | os.PathLike[str] | None = None) -> TerminalConfig:
    p = Path(path) if path is not None else default_config_path()
    try:
        raw = p.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{p}: no terminal configuration; provision the terminal first "
            "(pipos provision --host URL --activation-code CODE)"
        ) from exc
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read ({exc.strerror})") from exc
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{p}: not valid TOML ({exc})") from exc
    return parse_config(doc, str(p))


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    # A JSON string is a valid TOML basic string (same escapes, \uXXXX included).
    return json.dumps(str(value), ensure_ascii=True)


def dump_config(config: TerminalConfig) -> str:
    lines = ["# pipos terminal configuration (written by `pipos provision`; no secrets here)"]
    current = None
    for table, key, attr, _kind in _FIELDS:
        value = getattr(config, attr)
        if value is None:
            continue
        if table != current:
            lines.append("")
            lines.append(f"[{table}]")
            current = table
        lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def save_config(config: TerminalConfig, path: str | os.PathLike[str]) -> None:
    """Replace the file atomically: readers see the old or the new configuration, whole."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    text = dump_config(config)
    parse_config(tomllib.loads(text), str(p))  # never write what we could not read back
    # 0600 whatever the umask (atomic_write sets the mode with fchmod): the file names the
    # terminal's acquirer, identity and where its secrets are.
    atomic_write(p, text.encode("utf-8"), mode=0o600)
