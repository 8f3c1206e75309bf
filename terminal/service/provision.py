"""Provisioning and field service: one-step set-up, parameter updates, key rotation, unit swap.

`provision()` takes a bare unit to a working terminal in one step:

1. the device secret from its provider (`secret_provider`: sealed to the TPM, derived from
   the Raspberry Pi's OTP key, or a 0600 file for development; created if there is none) and
   the keystore with a fresh Ed25519 terminal key. A keystore kept under another provider is
   moved to the one asked for (re-encrypted under its secret, the old secret then removed);
   an older keystore format is upgraded (its identity block authenticated);
2. enrolment with the acquirer using the one-time activation code (the host answers the
   same enrolment when the same key retries the same code, so a re-run after a crash is safe);
3. the host-signed parameters (terminal data, AIDs, limits, CA public keys): signature and
   terminal id checked by :func:`terminal.acquirer.client.verify_parameters`, contents validated by
   :func:`terminal.domain.params.parse_params`, CA keys with a bad or missing check sum refuse the
   whole set, expired CA keys are left out (EMV Book 2 §5.1: an expired key must not be used);
4. the parameters written atomically to DATA_DIR/parameters.json (the signed document is kept
   so it is re-verified on every load) and the configuration file written atomically;
5. the technician credential set, an audit event, and a summary.

Re-running it on a provisioned terminal with the same host refreshes the parameters and
changes nothing else. Enrolling a provisioned terminal again (another host, or --force) gives
it a new key and terminal id; that is refused while payments wait in its offline queue,
unless forced, because they would then be sent under the new identity.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from offline_queue import OfflineQueue, QueueError

from ..acquirer.client import (
    AcquirerClient,
    AcquirerError,
    HostKeyMismatchError,
    Parameters,
    ParametersInvalidError,
    TlsOptions,
    parse_host_key_fingerprint,
    verify_parameters,
)
from ..acquirer.iso8583.keys import KeyBlockRefusedError, unwrap_key_block
from ..acquirer.iso8583.link import SECRET_TMK, load_terminal_master_key
from ..acquirer.uplink import QUEUE_KEY_PURPOSE
from ..domain.errors import TerminalError
from ..domain.params import (
    AidParams,
    ParamsError,
    TerminalParams,
    data_object_amount,
    parse_params,
)
from ..domain.signing import b64decode, b64encode
from ..security.technician import KEY_PURPOSE as TECHNICIAN_KEY_PURPOSE
from ..security.technician import TechnicianCredential, upgrade_keystore
from ..store.audit import AuditLog
from ..store.device_secret import (
    PROVIDERS,
    DeviceSecretProvider,
    FileSecret,
    RpiOtpSecret,
    TpmSecret,
    make_provider,
)
from ..store.keys import (
    DEFAULT_SCRYPT_N,
    Keystore,
    KeystoreError,
    SequenceCounter,
    SequenceError,
    WrongSecretError,
    atomic_write,
)
from .config import PARAMS_FILE, PROTOCOLS, TerminalConfig, load_config, save_config
from .transfer import (
    TransferGuard,
    acquirer_key_confirmer,
    export_queue_file,
    import_queue_file,
    keystore_signers,
)

__all__ = [
    "EXPORTED_FILE",
    "INSTALLED_FORMAT",
    "CaKeyChange",
    "InstalledParameters",
    "Iso8583Provisioning",
    "ParamChange",
    "ParametersRefusedError",
    "ParamsUpdate",
    "ProvisionError",
    "ProvisionRefusedError",
    "ProvisionResult",
    "ServiceTerminal",
    "UnitTransfer",
    "VettedParameters",
    "check_acquirer_url",
    "content_digest",
    "diff_parameters",
    "ensure_device_secret",
    "install_parameters",
    "load_installed_parameters",
    "open_service_terminal",
    "parameter_file_document",
    "provision",
    "queue_backlog",
    "refuse_if_exported",
    "unit_exported",
    "vet_parameters",
]

INSTALLED_FORMAT: Final = "pipos-installed-params-1"
QUEUE_FILE: Final = "offline_queue.sqlite3"
SEQUENCE_FILE: Final = "sequence.json"
_ENVELOPE: Final = ("format", "version", "terminal_id", "merchant_id", "issued_at")

Clock = Callable[[], float]
Token = Callable[[int], bytes]


class ProvisionError(TerminalError):
    """Provisioning or a service operation could not be completed; the message says why."""


class ProvisionRefusedError(ProvisionError):
    """Provisioning would overwrite a provisioned terminal that still holds payments."""


class ParametersRefusedError(ProvisionError):
    """Downloaded parameters failed a check; the installed parameters stay as they were."""


# --- device secret -------------------------------------------------------------------------


def ensure_device_secret(path: Path, token: Token = os.urandom) -> bytes:
    """The device secret in `path`, created (random, mode 0600) when there is none."""
    return FileSecret(path).ensure(token)


#: Why `pipos provision` names no default provider for a real acquirer.
_CHOOSE_PROVIDER: Final = (
    "choose where the device secret lives: --secret tpm or --secret rpi-otp; --secret file is "
    "for development only and leaves the keystore openable from a copy of the SD card"
)


def _secret_providers(
    existing: TerminalConfig | None,
    data_dir: Path,
    kind: str | None,
    secret_file: Path | None,
    tpm_tcti: str | None,
    otp_command: str | None,
    host_url: str,
) -> tuple[DeviceSecretProvider, DeviceSecretProvider | None]:
    """The provider asked for (else the configured one) and, when it is another one than the
    configured, the configured one (which the keystore is then moved from). With neither, the
    file only for a simulated acquirer on this machine: a terminal enrolled with a real one
    must not end up with its keystore openable from the SD card because a flag was left out."""
    kept = existing if existing is not None and existing.data_dir == data_dir else None
    if kind is None and kept is not None:
        kind = kept.secret
    elif kind is None:
        if not _is_loopback(urlsplit(host_url).hostname or ""):
            raise ProvisionError(f"acquirer {host_url}: {_CHOOSE_PROVIDER}")
        kind = "file"
    if kind not in PROVIDERS:
        raise ProvisionError(
            f"--secret {kind}: unknown device-secret provider (one of: {', '.join(PROVIDERS)})"
        )
    if kind != "file" and secret_file is not None:
        raise ProvisionError(f"--secret-file is for --secret file, not --secret {kind}")
    if kept is not None and kept.secret == kind:
        secret_file = secret_file or kept.secret_file
        tpm_tcti = tpm_tcti or kept.tpm_tcti
        otp_command = otp_command or kept.otp_command
    provider = make_provider(
        kind, data_dir=data_dir, secret_file=secret_file, tcti=tpm_tcti, otp_command=otp_command
    )
    if kept is None:
        return provider, None
    previous = kept.secret_provider()
    moved = previous.kind != provider.kind or (
        isinstance(previous, FileSecret)
        and isinstance(provider, FileSecret)
        and previous.path != provider.path
    )
    return provider, previous if moved else None


def _open_keystore(
    data_dir: Path,
    provider: DeviceSecretProvider,
    previous: DeviceSecretProvider | None,
    *,
    token: Token,
    clock: Clock,
    scrypt_n: int,
) -> tuple[Keystore, bool, DeviceSecretProvider | None]:
    """(keystore, created, the provider it was moved from: discard its secret once the new
    configuration is written)."""
    if not Keystore.exists(data_dir):
        secret = provider.ensure(token)
        keystore = Keystore.create(data_dir, secret, token=token, clock=clock, scrypt_n=scrypt_n)
        return keystore, True, None
    moved_from: DeviceSecretProvider | None = None
    try:
        if previous is not None and not provider.exists():
            raise WrongSecretError(f"no device secret yet at {provider.describe()}")
        keystore = Keystore.open(data_dir, provider.load(), token=token, clock=clock)
        # Re-run after a crash between the move and the new configuration: finish the move.
        if previous is not None and previous.exists():
            moved_from = previous
    except WrongSecretError as exc:
        if previous is None or not previous.exists():
            raise ProvisionError(
                f"{exc}; the keystore in {data_dir} belongs to another device secret "
                f"(tried {provider.describe()}; if a `pipos provision --secret ...` was cut "
                "short, run it again with the same --secret)"
            ) from exc
        try:
            keystore = Keystore.open(data_dir, previous.load(), token=token, clock=clock)
        except KeystoreError as old_exc:
            raise ProvisionError(
                f"{old_exc}; the keystore in {data_dir} opens neither with "
                f"{provider.describe()} nor with {previous.describe()}"
            ) from old_exc
        # One atomic replace re-encrypts it under the new provider's secret; the data keys
        # come from the master secret inside, so the queue and journal stay readable.
        keystore.change_secret(provider.create(token, replace=True))
        moved_from = previous
    except KeystoreError as exc:
        raise ProvisionError(f"{exc} (device secret: {provider.describe()})") from exc
    if keystore.needs_upgrade:
        keystore.upgrade()
    return keystore, False, moved_from


# --- parameters ----------------------------------------------------------------------------


def _embedded_defaults() -> dict[str, Any]:
    text = resources.files("terminal").joinpath("data/default_params.json").read_text("utf-8")
    doc: dict[str, Any] = json.loads(text)
    return doc


def _alnum8(text: str, fill: str = "0") -> str:
    """An 8-character alphanumeric id (9F1C / 9F1E are an8) from the end of `text`."""
    kept = "".join(ch for ch in text if ch.isascii() and ch.isalnum())
    return kept[-8:].rjust(8, fill)


def _is_compact(body: Mapping[str, Any]) -> bool:
    """The acquirer's compact form (the simulated host's default) rather than a full file."""
    aids = body.get("aids")
    return isinstance(aids, list) and any(
        isinstance(a, dict) and "kernel" in a and "kernel_id" not in a for a in aids
    )


def _from_compact(
    body: Mapping[str, Any], *, terminal_id: str, merchant_id: str | None, serial: str
) -> dict[str, Any]:
    """Fill a full parameter file from the compact form, over the embedded defaults.

    The compact form carries what differs per acquirer (terminal data, AIDs with their
    limits, CA keys, offline limits); what it does not carry (TACs, application versions)
    comes from the embedded defaults for the same AID.
    """
    base = _embedded_defaults()
    out: dict[str, Any] = {"version": base.get("version", 1)}
    terminal = dict(base["terminal"])
    given = body.get("terminal", {}) if isinstance(body.get("terminal"), dict) else {}
    for key in ("country_code", "currency_code"):
        if isinstance(given.get(key), str) and given[key].isascii() and given[key].isdigit():
            terminal[key] = int(given[key])
        elif key in given:
            terminal[key] = given[key]
    for key in (
        "currency_exponent",
        "merchant_category_code",
        "language",  # the acquirer's choice for the merchant's screen and receipts
        "announce_amount",  # the page speaks the approved amount (Chinese counters expect it)
        "sounds",  # the page's tones on tap, approval and decline
        "terminal_type",
        "terminal_capabilities",
        "additional_terminal_capabilities",
    ):
        if key in given:
            terminal[key] = given[key]
    if merchant_id:
        terminal["merchant_identifier"] = merchant_id[:15]
        terminal["merchant_name_location"] = f"MERCHANT {merchant_id}"[:128]
    terminal["terminal_identifier"] = _alnum8(terminal_id)
    terminal["ifd_serial_number"] = _alnum8(serial)
    out["terminal"] = terminal
    defaults = {str(a["aid"]).upper(): a for a in base["aids"]}
    by_kernel = {int(a["kernel_id"]): a for a in base["aids"]}
    aids = []
    for entry in body.get("aids", []):
        if not isinstance(entry, dict):
            aids.append(entry)  # parse_params names it
            continue
        aid = str(entry.get("aid", "")).upper()
        kernel = entry.get("kernel")
        template = defaults.get(aid) or by_kernel.get(kernel if isinstance(kernel, int) else -1)
        full = dict(template or base["aids"][0])
        full["aid"] = aid
        full["label"] = str(entry.get("brand") or full.get("label") or "CARD").upper()[:16]
        if isinstance(kernel, int):
            full["kernel_id"] = kernel
        limits = dict(full.get("limits", {}))
        limits["contactless_transaction"] = entry.get("contactless_transaction_limit")
        limits["contactless_floor"] = entry.get("floor_limit", 0)
        limits["cvm_required"] = entry.get("cvm_required_limit")
        on_device = limits.get("contactless_transaction_on_device_cvm")
        if isinstance(on_device, int) and isinstance(limits["contactless_transaction"], int):
            limits["contactless_transaction_on_device_cvm"] = max(
                on_device, limits["contactless_transaction"]
            )
        full["limits"] = limits
        full["terminal_floor_limit"] = entry.get("floor_limit", 0)
        aids.append(full)
    out["aids"] = aids
    keys = []
    for raw in body.get("ca_public_keys", []):
        if isinstance(raw, dict) and "label" in raw:
            raw = {("_label" if k == "label" else k): v for k, v in raw.items()}
        keys.append(raw)
    out["ca_public_keys"] = keys
    offline = body.get("offline")
    if isinstance(offline, dict):
        currency = terminal.get("currency_code")
        total = offline.get("max_total")
        per_txn = base.get("offline", {}).get("max_transaction_amount", 0)
        seconds = offline.get("max_age_seconds", 86400)
        out["offline"] = {
            "enabled": True,
            "max_transaction_amount": min(per_txn, total) if isinstance(total, int) else per_txn,
            "max_total_amount": {f"{currency:03d}" if isinstance(currency, int) else "": total},
            "max_count": offline.get("max_count"),
            "max_age_hours": max(1, math.ceil(seconds / 3600)) if isinstance(seconds, int) else 1,
        }
    if "qr" in body:
        out["qr"] = body["qr"]
    return out


def parameter_file_document(
    signed: Mapping[str, Any], *, terminal_id: str, merchant_id: str | None, serial: str
) -> dict[str, Any]:
    """The parameter file (terminal/domain/params.py format) inside a host-signed document."""
    body = {k: v for k, v in signed.items() if k not in _ENVELOPE}
    if _is_compact(body):
        return _from_compact(body, terminal_id=terminal_id, merchant_id=merchant_id, serial=serial)
    return body


@dataclass(frozen=True)
class CaKeyChange:
    rid: str
    index: str
    expiry: str | None
    reason: str

    def label(self) -> str:
        return f"{self.rid}/{self.index}"


@dataclass(frozen=True)
class VettedParameters:
    """Host parameters that passed every check, ready to install."""

    signed: Parameters
    document: dict[str, Any]
    params: TerminalParams
    refused_ca_keys: tuple[CaKeyChange, ...]

    @property
    def version(self) -> int:
        return self.signed.version


def _key_label(rid: bytes, index: int) -> tuple[str, str]:
    return rid.hex().upper(), f"{index:02X}"


def vet_parameters(
    signed: Parameters, *, serial: str, today: datetime.date, source: str = "host parameters"
) -> VettedParameters:
    """Validate signed parameters for use; raise ParametersRefusedError listing every problem.

    A CA key with a bad check sum (EMV Book 2 §5.1, Table 2: SHA-1 over RID, index, modulus
    and exponent) or without one makes the whole set suspect: refused. An expired CA key is
    only left out, and reported, so the keys that are still valid keep working.
    """
    document = parameter_file_document(
        signed.document,
        terminal_id=signed.terminal_id,
        merchant_id=signed.merchant_id,
        serial=serial,
    )
    try:
        params = parse_params(document, source)
    except ParamsError as exc:
        raise ParametersRefusedError(
            "parameters refused, the installed ones stay in use:\n  " + "\n  ".join(exc.messages)
        ) from exc
    missing = [
        f"ca_public_keys[{i}]: no check sum (sha1); a downloaded CA key must carry one"
        for i, key in enumerate(params.ca_public_keys)
        if key.sha1 is None
    ]
    if missing:
        raise ParametersRefusedError(
            "parameters refused, the installed ones stay in use:\n  " + "\n  ".join(missing)
        )
    expired = {
        (k.rid, k.index): k
        for k in params.ca_public_keys
        if k.expiry is not None and k.expiry < today
    }
    refused = tuple(
        CaKeyChange(
            *_key_label(k.rid, k.index), k.expiry.isoformat() if k.expiry else None, "expired"
        )
        for k in expired.values()
    )
    if expired:
        kept = []
        for raw in document.get("ca_public_keys", []):
            parsed = parse_params({**document, "ca_public_keys": [raw]}, source).ca_public_keys[0]
            if (parsed.rid, parsed.index) not in expired:
                kept.append(raw)
        document = {**document, "ca_public_keys": kept}
        params = parse_params(document, source)
    return VettedParameters(signed, document, params, refused)


@dataclass(frozen=True)
class InstalledParameters:
    version: int
    issued_at: int
    installed_at: int
    params: TerminalParams
    refused_ca_keys: tuple[CaKeyChange, ...]  # left out today (expired, at install or since)
    ca_keys: tuple[str, ...]
    refused_at_install: tuple[str, ...] = ()

    @property
    def expired_since_install(self) -> tuple[CaKeyChange, ...]:
        return tuple(k for k in self.refused_ca_keys if k.label() not in self.refused_at_install)


def install_parameters(
    vetted: VettedParameters, data_dir: Path, *, now: int, host_key_id: str | None
) -> Path:
    """Write DATA_DIR/parameters.json in one atomic replace (never half-written)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    doc = {
        "format": INSTALLED_FORMAT,
        "version": vetted.version,
        "issued_at": vetted.signed.issued_at,
        "installed_at": now,
        "terminal_id": vetted.signed.terminal_id,
        "host_key_id": host_key_id,
        "signed": {
            "document": vetted.signed.raw.decode("utf-8"),
            "signature": b64encode(vetted.signed.signature),
        },
        "params": vetted.document,
        "refused_ca_keys": [c.__dict__ for c in vetted.refused_ca_keys],
    }
    path = data_dir / PARAMS_FILE
    # 0600 whatever the umask, like every file the service writes (fchmod in atomic_write).
    atomic_write(path, json.dumps(doc, indent=2, sort_keys=True).encode("utf-8") + b"\n", 0o600)
    return path


def load_installed_parameters(
    path: Path,
    *,
    host_public_key: bytes,
    terminal_id: str,
    serial: str,
    today: datetime.date,
) -> InstalledParameters:
    """Load installed parameters, re-verifying the host's signature and CA key expiry."""
    try:
        doc = json.loads(path.read_bytes())
        raw = str(doc["signed"]["document"]).encode("utf-8")
        signature = b64decode(str(doc["signed"]["signature"]), "parameters signature")
    except FileNotFoundError as exc:
        raise ParametersRefusedError(f"{path}: no parameters installed") from exc
    except (OSError, ValueError, KeyError, TypeError, TerminalError) as exc:
        raise ParametersRefusedError(f"{path}: damaged ({exc})") from exc
    if doc.get("format") != INSTALLED_FORMAT:
        raise ParametersRefusedError(f"{path}: expected format {INSTALLED_FORMAT}")
    try:
        signed = verify_parameters(
            raw, signature, host_public_key=host_public_key, terminal_id=terminal_id
        )
    except ParametersInvalidError as exc:
        raise ParametersRefusedError(f"{path}: {exc}") from exc
    vetted = vet_parameters(signed, serial=serial, today=today, source=str(path))
    return InstalledParameters(
        version=signed.version,
        issued_at=signed.issued_at,
        installed_at=int(doc.get("installed_at", 0)),
        params=vetted.params,
        refused_ca_keys=vetted.refused_ca_keys,
        ca_keys=tuple("/".join(_key_label(k.rid, k.index)) for k in vetted.params.ca_public_keys),
        refused_at_install=tuple(
            f"{k.get('rid')}/{k.get('index')}"
            for k in doc.get("refused_ca_keys", [])
            if isinstance(k, dict)
        ),
    )


def _installed_ca_keys(path: Path) -> set[str]:
    try:
        doc = json.loads(path.read_bytes())
        return {
            f"{str(k['rid']).upper()}/{str(k['index']).upper()}"
            for k in doc["params"].get("ca_public_keys", [])
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return set()


def _installed_digest(path: Path) -> str | None:
    """The content digest of the installed host-signed document (None: none readable)."""
    try:
        document = json.loads(json.loads(path.read_bytes())["signed"]["document"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return content_digest(document) if isinstance(document, dict) else None


def _installed_params(path: Path) -> TerminalParams | None:
    """The installed parameters as the terminal uses them, to compare an update with; None
    when there are none or they do not parse (the update then installs without a diff)."""
    try:
        return parse_params(json.loads(path.read_bytes())["params"], str(path))
    except (OSError, ValueError, KeyError, TypeError, ParamsError):
        return None


def _installed_version(path: Path) -> int | None:
    try:
        value = json.loads(path.read_bytes())["version"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, int) else None


# --- queue ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backlog:
    count: int
    amounts: dict[int, int]
    flagged: int
    oldest_created_at: int | None


def queue_backlog(data_dir: Path) -> Backlog | None:
    """Payments not yet accepted by the host (None when there is no queue). Needs no key."""
    path = data_dir / QUEUE_FILE
    if not path.exists():
        return None
    with OfflineQueue.open(path, None, create=False) as queue:
        status = queue.status()
    from offline_queue.model import OUTSTANDING_STATES

    oldest = [
        s.oldest_created_at
        for state, s in status.states.items()
        if state in OUTSTANDING_STATES and s.oldest_created_at is not None
    ]
    return Backlog(
        status.outstanding_count,
        status.outstanding_amounts(),
        status.flagged,
        min(oldest) if oldest else None,
    )


def _describe_amounts(amounts: Mapping[int, int]) -> str:
    from ..domain.currency import UnknownCurrencyError, format_amount

    parts = []
    for cur, minor in sorted(amounts.items()):
        try:
            parts.append(format_amount(minor, cur))
        except UnknownCurrencyError:
            parts.append(f"{minor} (currency {cur:03d})")
    return ", ".join(parts) or "nothing"


# --- provisioning --------------------------------------------------------------------------


@dataclass(frozen=True)
class Iso8583Provisioning:
    """The ISO 8583 link a terminal is provisioned for (docs/iso8583.md): the acquiring
    host's address, the TID and MID it issued, and the TMK as a TR-31 key block under the
    key-injection facility's key-block protection key `kbpk`."""

    address: str
    terminal_id: str
    merchant_id: str
    tmk_key_block: str = ""
    kbpk: bytes = field(default=b"", repr=False)
    profile: str | None = None
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    echo_interval: int | None = None


@dataclass(frozen=True)
class ProvisionResult:
    config_path: Path
    data_dir: Path
    host_url: str
    terminal_id: str
    merchant_id: str
    serial: str
    key_id: str
    params_version: int
    params: TerminalParams
    refused_ca_keys: tuple[CaKeyChange, ...]
    action: str  # "provisioned", "refreshed", "re-enrolled"
    previous_terminal_id: str | None = None
    queued_payments: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)
    #: Where the device secret comes from (the provider, described), e.g. "TPM 2.0 through ...".
    device_secret: str = ""
    #: The payments' protocol, and on ISO 8583 its address and the TMK's key check value
    #: (to compare with the one the key-injection facility printed; "" when none was loaded).
    protocol: str = "pipos"
    iso8583_address: str = ""
    tmk_check_value: str = ""

    def summary_lines(self) -> list[str]:
        p = self.params
        lines = [
            f"terminal {self.terminal_id} {self.action} with {self.host_url}",
            f"  merchant:    {self.merchant_id}",
            f"  serial:      {self.serial}",
            f"  key:         {self.key_id}",
            f"  secret:      {self.device_secret}",
            f"  parameters:  version {self.params_version}, {len(p.aids)} application(s): "
            + ", ".join(f"{a.label} {a.aid.hex().upper()}" for a in p.aids),
            f"  CA keys:     {len(p.ca_public_keys)} installed: "
            + ", ".join("/".join(_key_label(k.rid, k.index)) for k in p.ca_public_keys),
        ]
        for key in self.refused_ca_keys:
            lines.append(f"  refused CA key {key.label()}: {key.reason} ({key.expiry})")
        if p.offline is not None and p.offline.enabled:
            lines.append(
                f"  offline:     up to {p.offline.max_count} payments, {p.offline.max_age_hours} h"
            )
        else:
            lines.append("  offline:     not accepted")
        if self.protocol == "iso8583":
            lines.append(f"  payments:    ISO 8583 to {self.iso8583_address}")
            if self.tmk_check_value:
                lines.append(f"  TMK loaded:  key check value {self.tmk_check_value}")
        lines.append(f"  config:      {self.config_path}")
        lines.append(f"  data:        {self.data_dir}")
        if self.previous_terminal_id and self.previous_terminal_id != self.terminal_id:
            lines.append(f"  replaces terminal id {self.previous_terminal_id}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return lines


def _iso8583_choice(
    protocol: str | None, iso: Iso8583Provisioning | None, existing: TerminalConfig | None
) -> tuple[str, Iso8583Provisioning | None]:
    """The protocol the payments will use, and the ISO 8583 link given now (None: none,
    or the configured one kept as it is)."""
    chosen = protocol or (existing.protocol if existing is not None else "pipos")
    if chosen not in PROTOCOLS:
        raise ProvisionError(
            f"--acquirer-protocol: {chosen!r} is not one of {', '.join(PROTOCOLS)}"
        )
    if iso is not None and chosen != "iso8583":
        raise ProvisionError("the ISO 8583 link's options go with --acquirer-protocol iso8583")
    if (
        chosen == "iso8583"
        and iso is None
        and not (existing is not None and existing.protocol == "iso8583")
    ):
        raise ProvisionError(
            "--acquirer-protocol iso8583 needs the link: --iso8583-address, "
            "--iso8583-terminal-id, --iso8583-merchant-id and the TMK (--tmk-key-block, "
            "--kbpk-file)"
        )
    if iso is not None and bool(iso.tmk_key_block) != bool(iso.kbpk):
        raise ProvisionError("--tmk-key-block and --kbpk-file go together")
    return chosen, iso


def _iso8583_fields(
    protocol: str, iso: Iso8583Provisioning | None, existing: TerminalConfig | None
) -> dict[str, Any]:
    """The configuration's acquirer.protocol and [iso8583] table: as given now, as they
    were (a re-run without the link's options), or nothing for the pipos protocol."""
    names = (
        "iso8583_address",
        "iso8583_terminal_id",
        "iso8583_merchant_id",
        "iso8583_profile",
        "iso8583_ca_file",
        "iso8583_client_cert",
        "iso8583_client_key",
        "iso8583_echo_interval",
    )
    if protocol != "iso8583":
        return {}
    if iso is None:
        assert existing is not None
        return {"acquirer_protocol": protocol} | {n: getattr(existing, n) for n in names}
    return {
        "acquirer_protocol": protocol,
        "iso8583_address": iso.address,
        "iso8583_terminal_id": iso.terminal_id,
        "iso8583_merchant_id": iso.merchant_id,
        "iso8583_profile": iso.profile,
        "iso8583_ca_file": iso.ca_file,
        "iso8583_client_cert": iso.client_cert,
        "iso8583_client_key": iso.client_key,
        "iso8583_echo_interval": iso.echo_interval,
    }


@contextmanager
def _client(
    host_url: str,
    keystore: Keystore,
    data_dir: Path,
    tls: TlsOptions | None,
    client_options: Mapping[str, Any] | None,
) -> Iterator[AcquirerClient]:
    try:
        sequence = SequenceCounter(data_dir / SEQUENCE_FILE)
    except SequenceError as exc:
        raise ProvisionError(
            f"{exc}: the terminal service is running; stop it first (systemctl stop pipos)"
        ) from exc
    try:
        with AcquirerClient(
            host_url, keystore, sequence, tls=tls, **dict(client_options or {})
        ) as client:
            yield client
    finally:
        sequence.close()


_LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost.localdomain"})


def _is_loopback(hostname: str) -> bool:
    if hostname.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def check_acquirer_url(host_url: str, *, allow_plain_http: bool = False) -> None:
    """The acquirer is reached over HTTPS. Plain HTTP only for a simulated acquirer on this
    machine (127.0.0.0/8, ::1, localhost) and only when asked for (`--allow-plain-http`):
    anywhere else anyone on the path reads the card data and answers for the host."""
    parts = urlsplit(host_url)
    host = parts.hostname or ""
    if parts.scheme not in ("https", "http") or not host:
        raise ProvisionError(
            f"acquirer URL {host_url!r}: expected https://HOST[:PORT] (plain http:// only for "
            "a simulated acquirer on this machine, with --allow-plain-http)"
        )
    if parts.scheme == "https":
        return
    if not allow_plain_http:
        raise ProvisionError(
            f"acquirer URL {host_url}: plain http:// is refused, anyone on the network could "
            "read and answer it; use the acquirer's https:// URL (for a simulated acquirer on "
            "this machine, add --allow-plain-http)"
        )
    if not _is_loopback(host):
        raise ProvisionError(
            f"acquirer URL {host_url}: --allow-plain-http is only for a simulated acquirer on "
            f"this machine (127.0.0.1, ::1 or localhost), and {host} is not one; use the "
            "acquirer's https:// URL"
        )


def _host_key_pin(host_key: str | None) -> str | None:
    if host_key is None:
        return None
    try:
        return parse_host_key_fingerprint(host_key)
    except AcquirerError as exc:
        raise ProvisionError(f"--host-key: {exc}") from exc


def _require_pin(host_url: str, tls: TlsOptions | None, pin: str | None) -> None:
    """Enrolment learns the host key: it must be pinned, by its fingerprint or by the
    acquirer's CA (an https:// URL with only that CA trusted)."""
    ca_pinned = tls is not None and bool(tls.ca_file) and host_url.startswith("https://")
    if pin is None and not ca_pinned:
        raise ProvisionError(
            "enrolment needs the acquirer's host key pinned: give --host-key ed25519:... (the "
            "fingerprint printed next to the activation code), or --ca-file with the "
            "acquirer's CA for its https:// URL"
        )


def tls_from_config(config: TerminalConfig) -> TlsOptions | None:
    if config.ca_file or config.client_cert:
        return TlsOptions(config.ca_file, config.client_cert, config.client_key)
    return None


def provision(
    *,
    host_url: str,
    activation_code: str,
    config_path: Path,
    technician_secret: str,
    data_dir: Path | None = None,
    secret_file: Path | None = None,
    secret_provider: str | None = None,
    tpm_tcti: str | None = None,
    otp_command: str | None = None,
    force: bool = False,
    tls: TlsOptions | None = None,
    reader_url: str | None = None,
    scanner_url: str | None = None,
    clock: Clock = time.time,
    token: Token = os.urandom,
    scrypt_n: int = DEFAULT_SCRYPT_N,
    client_options: Mapping[str, Any] | None = None,
    host_key: str | None = None,
    allow_plain_http: bool = False,
    acquirer_protocol: str | None = None,
    iso8583: Iso8583Provisioning | None = None,
) -> ProvisionResult:
    """Provision (or safely re-provision) the terminal; see the module documentation.

    `acquirer_protocol` "iso8583" with `iso8583`: the payments go over that ISO 8583 link,
    its TMK opened and checked before anything is enrolled, loaded into the keystore after;
    enrolment and parameters stay on `host_url` (the pipos protocol). None keeps the
    configured protocol (a re-run keeps the link and its TMK as they are).

    `host_key` (``ed25519:`` + 64 hex digits, printed next to the activation code) pins the
    acquirer's key for enrolment; `allow_plain_http` lets a simulated acquirer on this
    machine be reached over plain HTTP (see :func:`check_acquirer_url`)."""
    # Before anything is written: where the terminal will send card data, and how it will
    # know that the host answering is the acquirer's.
    check_acquirer_url(host_url, allow_plain_http=allow_plain_http)
    pin = _host_key_pin(host_key)
    existing: TerminalConfig | None = None
    if config_path.exists():
        try:
            existing = load_config(config_path)
        except TerminalError:
            if not force:
                raise
    protocol, iso = _iso8583_choice(acquirer_protocol, iso8583, existing)
    if iso is not None and iso.tmk_key_block:
        # Opened now, before anything is enrolled or written: a block that does not open
        # under the facility's key, or holds another kind of key, stops provisioning here.
        try:
            unwrap_key_block(iso.kbpk, iso.tmk_key_block, "master")
        except KeyBlockRefusedError as exc:
            raise ProvisionError(f"--tmk-key-block: {exc}") from exc
    if not (
        existing is not None
        and existing.terminal_id
        and not force
        and existing.host_url.rstrip("/") == host_url.rstrip("/")
    ):
        _require_pin(host_url, tls, pin)  # an enrolment is coming
    data_dir = data_dir or (existing.data_dir if existing else None)
    if data_dir is None:
        raise ProvisionError("no data directory given (--data-dir)")
    provider, previous_provider = _secret_providers(
        existing, data_dir, secret_provider, secret_file, tpm_tcti, otp_command, host_url
    )
    audit = AuditLog(data_dir / "audit.log", clock=clock)
    technician = _technician(
        data_dir, audit, provider, previous_provider, clock=clock, token=token, scrypt_n=scrypt_n
    )
    if technician.exists():
        technician.verify(technician_secret, action="provision")
    else:
        # Checked now (length, triviality) so a bad PIN fails before anything is enrolled.
        _check_new_secret(technician_secret)

    keystore, created, moved_from = _open_keystore(
        data_dir, provider, previous_provider, token=token, clock=clock, scrypt_n=scrypt_n
    )
    if moved_from is not None:
        audit.record(
            "device_secret_moved",
            actor="technician",
            old_provider=moved_from.kind,
            new_provider=provider.kind,
        )

    previous_tid = keystore.terminal_id
    notes: list[str] = []
    if provider.development_only:
        notes.append(
            f"the device secret is a {provider.describe()} on the same storage as the "
            "keystore: development only; a production terminal uses --secret tpm or "
            "--secret rpi-otp"
        )
    same_host = existing is not None and existing.host_url.rstrip("/") == host_url.rstrip("/")
    if previous_tid is not None and (force or (existing is not None and not same_host)):
        mode = "re-enrolled"
    elif previous_tid is not None and same_host:
        mode = "refreshed"
    else:
        # Not enrolled yet, or enrolled but the configuration was never written (a crash
        # mid-provisioning): enrolling again with the same key and code is answered with the
        # same terminal id.
        mode = "provisioned"

    backlog = queue_backlog(data_dir)
    queued = backlog.count if backlog else 0
    if mode == "re-enrolled" and queued:
        assert backlog is not None
        why = (
            f"terminal {previous_tid} has {queued} payment(s) "
            f"({_describe_amounts(backlog.amounts)}) in its offline queue not yet accepted "
            "by its acquirer; re-provisioning gives it a new identity, under which they "
            "would be sent"
        )
        if not force:
            raise ProvisionRefusedError(
                f"{why}. Send them first (pipos sync), or move them to another unit "
                "(pipos unit export), or re-run with --force to re-provision anyway"
            )
        notes.append(why + " (forced)")

    if mode == "re-enrolled":
        # A new signing key (the host refuses to enrol a key twice); the data keys come from
        # the keystore's master secret, so the offline queue stays readable.
        keystore.rotate()
        audit.record("terminal_key_replaced", actor="technician", old_terminal_id=previous_tid)

    host_key_id = existing.host_key_id if existing is not None and mode == "refreshed" else None
    with _client(host_url, keystore, data_dir, tls, client_options) as client:
        if mode != "refreshed":
            _require_pin(host_url, tls, pin)
            try:
                enrolment = client.enrol(activation_code, host_key=pin)
            except HostKeyMismatchError as exc:
                # Nothing from this host was stored (no identity, parameters or
                # configuration); the refusal itself is kept for the audit.
                audit.record(
                    "enrolment_refused",
                    actor="technician",
                    host=host_url,
                    pinned_host_key=exc.expected,
                    answered_host_key=exc.actual,
                )
                raise ProvisionError(str(exc)) from exc
            host_key_id = enrolment.host_key_id
            audit.record(
                "enrolled",
                actor="technician",
                terminal_id=enrolment.terminal_id,
                merchant_id=enrolment.merchant_id,
                host=host_url,
                key_id=keystore.key_id,
            )
        signed = client.download_parameters()
    terminal_id = keystore.terminal_id
    merchant_id = keystore.merchant_id
    if terminal_id is None or merchant_id is None:
        raise ProvisionError("enrolment did not give the terminal an identity")
    check_value = ""
    if iso is not None and iso.tmk_key_block:
        check_value = load_terminal_master_key(keystore, iso.kbpk, iso.tmk_key_block)
        audit.record(
            "iso8583_tmk_loaded",
            actor="technician",
            terminal_id=terminal_id,
            iso8583_terminal_id=iso.terminal_id,
            key_check_value=check_value,
        )
    elif protocol == "iso8583" and keystore.secret(SECRET_TMK) is None:
        raise ProvisionError(
            "the ISO 8583 link needs the terminal master key: give --tmk-key-block and "
            "--kbpk-file (from the acquirer's key-injection facility)"
        )
    today = datetime.datetime.fromtimestamp(clock(), datetime.UTC).date()
    vetted = vet_parameters(signed, serial=keystore.serial, today=today)
    install_parameters(vetted, data_dir, now=int(clock()), host_key_id=host_key_id)
    config = TerminalConfig(
        host_url=host_url,
        data_dir=data_dir,
        secret=provider.kind,
        secret_file=provider.path if isinstance(provider, FileSecret) else None,
        tpm_tcti=provider.tcti if isinstance(provider, TpmSecret) else None,
        otp_command=provider.command if isinstance(provider, RpiOtpSecret) else None,
        terminal_id=terminal_id,
        merchant_id=merchant_id,
        serial=keystore.serial,
        provisioned_at=(
            existing.provisioned_at
            if existing and mode == "refreshed" and existing.provisioned_at
            else int(clock())
        ),
        host_key_id=host_key_id,
        ca_file=tls.ca_file if tls else (existing.ca_file if existing and same_host else None),
        client_cert=tls.client_cert if tls else (existing.client_cert if existing else None),
        client_key=tls.client_key if tls else (existing.client_key if existing else None),
        params_version=vetted.version,
        params_issued_at=vetted.signed.issued_at,
        reader_url=reader_url or (existing.reader_url if existing else None),
        scanner_url=scanner_url or (existing.scanner_url if existing else None),
        tips=existing.tips if existing else None,
        tip_custom=existing.tip_custom if existing else None,
        **_iso8583_fields(protocol, iso, existing),
    )
    save_config(config, config_path)
    if moved_from is not None:
        # Only now: until the configuration names the new provider, the old secret was the
        # record of where the keystore came from. It no longer opens anything.
        moved_from.discard()
    if not technician.exists():
        technician.set(technician_secret)
    audit.record(
        "provisioned",
        actor="technician",
        mode=mode,
        terminal_id=terminal_id,
        previous_terminal_id=previous_tid,
        host=host_url,
        key_id=keystore.key_id,
        params_version=vetted.version,
        refused_ca_keys=[c.label() for c in vetted.refused_ca_keys],
        new_keystore=created,
    )
    return ProvisionResult(
        config_path=config_path,
        data_dir=data_dir,
        host_url=host_url,
        terminal_id=terminal_id,
        merchant_id=merchant_id,
        serial=keystore.serial,
        key_id=keystore.key_id,
        params_version=vetted.version,
        params=vetted.params,
        refused_ca_keys=vetted.refused_ca_keys,
        action=mode,
        previous_terminal_id=previous_tid,
        queued_payments=queued,
        protocol=protocol,
        iso8583_address=config.iso8583_address or "",
        tmk_check_value=check_value,
        notes=tuple(notes),
        device_secret=provider.describe(),
    )


def _check_new_secret(secret: str) -> None:
    from ..security.technician import check_new_secret

    check_new_secret(secret)  # the one policy (terminal.security.pin_policy)


def _technician(
    data_dir: Path,
    audit: AuditLog,
    provider: DeviceSecretProvider,
    previous: DeviceSecretProvider | None,
    *,
    clock: Clock,
    token: Token,
    scrypt_n: int,
) -> TechnicianCredential:
    """The technician credential, bound to the keystore's key for it. A terminal provisioned
    again checks it before its keystore is opened for provisioning (nothing changes before
    the PIN is right); a new one sets it after its keystore is created. So the key is taken
    when first needed, from the keystore as it is at that moment."""

    def device_key() -> bytes:
        problems: list[str] = []
        for candidate in (provider, previous):
            if candidate is None or not candidate.exists():
                continue
            try:
                keystore = Keystore.open(data_dir, candidate.load(), token=token, clock=clock)
            except KeystoreError as exc:
                problems.append(str(exc))
                continue
            return keystore.data_key(TECHNICIAN_KEY_PURPOSE)
        raise ProvisionError(
            f"the technician PIN cannot be checked: the keystore in {data_dir} does not open "
            f"({'; '.join(problems) or 'no device secret'}); the credential is bound to it"
        )

    return TechnicianCredential(
        data_dir / "technician.json",
        audit,
        device_key=device_key,
        clock=clock,
        token=token,
        scrypt_n=scrypt_n,
    )


# --- what a parameter update changes -------------------------------------------------------


@dataclass(frozen=True)
class ParamChange:
    """One difference between the installed and the downloaded parameters, for a person:
    where (`section`: "terminal", "application A0000000031010 VISA", "offline", "QR codes",
    "CA key A000000003/92"), what (`item`), and the old and new values as shown (None: the
    thing was not there before, or is gone now)."""

    section: str
    item: str
    old: str | None
    new: str | None

    def line(self) -> str:
        if self.old is None:
            return f"{self.section}: {self.item} added" + (f" ({self.new})" if self.new else "")
        if self.new is None:
            return f"{self.section}: {self.item} removed" + (
                f" (was {self.old})" if self.old else ""
            )
        return f"{self.section}: {self.item} {self.old} -> {self.new}"

    def to_json(self) -> dict[str, str | None]:
        return {"section": self.section, "item": self.item, "old": self.old, "new": self.new}


def content_digest(document: Mapping[str, Any]) -> str:
    """SHA-256 over what a host-signed parameter document configures: everything but its
    envelope (version, issue time, who it is for), canonical JSON. Two documents with the
    same digest configure the terminal the same way, whatever their version says; the
    version alone cannot tell, since an acquirer may re-issue a version with other content."""
    body = {k: v for k, v in document.items() if k not in _ENVELOPE}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _money(amount: int | None, currency: int) -> str | None:
    from ..domain.currency import UnknownCurrencyError, format_amount

    if amount is None:
        return None
    try:
        return format_amount(amount, currency)
    except UnknownCurrencyError:
        return f"{amount} (minor units of currency {currency:03d})"


def _currency_name(code: int) -> str:
    from ..domain.currency import CURRENCIES

    known = CURRENCIES.get(code)
    return f"{known.alpha} ({code:03d})" if known is not None else f"{code:03d}"


def _hex(value: bytes | None) -> str | None:
    return None if value is None else value.hex().upper()


def _flag(value: bool) -> str:
    return "on" if value else "off"


def _terminal_items(params: TerminalParams) -> dict[str, str]:
    t = params.terminal
    return {
        "language": t.language,
        "currency": _currency_name(t.currency_code),
        "currency exponent": str(t.currency_exponent),
        "country": f"{t.country_code:03d}",
        "merchant category code": t.merchant_category_code,
        "merchant name and location": t.merchant_name_location,
        "merchant identifier": t.merchant_identifier.strip(),
        "terminal identifier": t.terminal_identifier,
        "9F35 Terminal Type": t.terminal_type.hex().upper(),
        "9F33 Terminal Capabilities": t.terminal_capabilities.hex().upper(),
        "9F40 Additional Terminal Capabilities": t.additional_terminal_capabilities.hex().upper(),
        "9F66 Terminal Transaction Qualifiers": t.ttq.hex().upper(),
        "sounds": _flag(t.sounds),
        "amount announced": _flag(t.announce_amount),
    }


def _aid_items(aid: AidParams, currency: int) -> dict[str, str]:
    """What one application configures: its kernel data objects by tag and name (amounts
    also in money), then what is not a data object for its kernel (limits in money)."""
    from emv.kernel.kernel_data import kernel_data_name

    items: dict[str, str] = {}
    objects = aid.data_objects()
    for tag, value in objects.items():
        amount = data_object_amount(tag, value)
        shown = value.hex().upper()
        if amount is not None:
            shown += f" ({_money(amount, currency)})"
        items[f"{tag:X} {kernel_data_name(tag)}"] = shown
    limits = aid.limits
    rs = aid.random_selection
    fields: dict[str, tuple[int | None, str | None]] = {
        # (the tag that carries it for some kernels, shown value)
        "label": (None, aid.label),
        "kernel": (None, str(aid.kernel_id)),
        "partial selection": (None, _flag(aid.partial_selection)),
        "application version": (0x9F09, _hex(aid.application_version)),
        "contactless limit": (0xDF8124, _money(limits.contactless_transaction, currency)),
        "contactless limit with on-device CVM": (
            0xDF8125,
            _money(limits.contactless_transaction_on_device_cvm, currency),
        ),
        "CVM limit": (0xDF8126, _money(limits.cvm_required, currency)),
        "contactless floor limit": (0xDF8123, _money(limits.contactless_floor, currency)),
        "terminal floor limit": (0x9F1B, _money(aid.terminal_floor_limit, currency)),
        "TAC denial": (0xDF8121, _hex(aid.tac_denial)),
        "TAC online": (0xDF8122, _hex(aid.tac_online)),
        "TAC default": (0xDF8120, _hex(aid.tac_default)),
        "TTQ": (0x9F66, _hex(aid.ttq)),
        "random selection": (
            None,
            f"threshold {_money(rs.threshold, currency)}, target {rs.target_percent}%, "
            f"max {rs.max_target_percent}%",
        ),
        "default TDOL": (None, _hex(aid.tdol)),
        "default DDOL": (None, _hex(aid.ddol)),
        "status check": (None, _flag(aid.status_check)),
        "zero amount allowed": (None, _flag(aid.zero_amount_allowed)),
        "extended selection": (None, _flag(aid.extended_selection)),
        "legacy fDDA (version 0)": (None, _flag(aid.fdda_version_0)),
    }
    for name, (carrier, text) in fields.items():
        # Said once: by its tag when the kernel gets it as a data object.
        if text is not None and (carrier is None or carrier not in objects):
            items[name] = text
    return items


def _offline_items(params: TerminalParams, currency: int | None = None) -> dict[str, str]:
    offline = params.offline
    currency = params.terminal.currency_code if currency is None else currency
    if offline is None or not offline.enabled:
        return {"accepted": "no"}
    items = {
        "accepted": "yes",
        "limit per payment": _money(offline.max_transaction_amount, currency) or "",
        "payments at most": str(offline.max_count),
        "oldest payment at most": f"{offline.max_age_hours} h",
    }
    for code, amount in sorted(offline.max_total_amount.items()):
        items[f"total at most in {_currency_name(code)}"] = _money(amount, code) or ""
    return items


def _qr_items(params: TerminalParams) -> dict[str, str]:
    qr = params.qr
    return {
        "enabled": _flag(qr.enabled),
        "customer-presented codes": _flag(qr.consumer_presented),
        "merchant-presented codes": _flag(qr.merchant_presented),
    }


def _ca_key_items(params: TerminalParams) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for key in params.ca_public_keys:
        out["/".join(_key_label(key.rid, key.index))] = {
            "modulus": f"{len(key.modulus) * 8} bits, SHA-1 "
            + (key.sha1.hex().upper()[:16] + "..." if key.sha1 else "none"),
            "exponent": key.exponent.hex().upper(),
            "expiry": key.expiry.isoformat() if key.expiry else "none",
        }
    return out


def _compare(
    section: str,
    old: Mapping[str, str],
    new: Mapping[str, str],
    *,
    old_as_new: Mapping[str, str] | None = None,
) -> list[ParamChange]:
    """The items that differ. `old_as_new`: the old items with amounts shown in the new
    currency, to compare by: an amount the same in minor units is no change of its own when
    only the currency changed (that is said once, in the terminal's section)."""
    same = old if old_as_new is None else old_as_new
    changes = []
    for item in [*old, *(k for k in new if k not in old)]:
        if same.get(item) != new.get(item):
            changes.append(ParamChange(section, item, old.get(item), new.get(item)))
    return changes


def diff_parameters(old: TerminalParams, new: TerminalParams) -> tuple[ParamChange, ...]:
    """Every difference between two parameter sets, in the order a technician reads them:
    the terminal, the applications (added, removed, changed, with each changed kernel data
    object by tag and name), offline acceptance, QR codes, the CA keys' contents (the keys
    added or removed are ParamsUpdate's own lists)."""
    changes = _compare("terminal", _terminal_items(old), _terminal_items(new))
    currency = new.terminal.currency_code
    old_aids = {a.aid: a for a in old.aids}
    new_aids = {a.aid: a for a in new.aids}
    for aid in [*old_aids, *(a for a in new_aids if a not in old_aids)]:
        before, after = old_aids.get(aid), new_aids.get(aid)
        either = after or before
        section = f"application {aid.hex().upper()} {either.label if either else ''}".rstrip()
        if before is None:
            kernel = f"kernel {after.kernel_id}" if after else ""
            changes.append(ParamChange(section, "application", None, kernel))
        elif after is None:
            changes.append(ParamChange(section, "application", f"kernel {before.kernel_id}", None))
        else:
            changes += _compare(
                section,
                _aid_items(before, old.terminal.currency_code),
                _aid_items(after, currency),
                old_as_new=_aid_items(before, currency),
            )
    changes += _compare(
        "offline",
        _offline_items(old),
        _offline_items(new),
        old_as_new=_offline_items(old, currency),
    )
    changes += _compare("QR codes", _qr_items(old), _qr_items(new))
    old_keys, new_keys = _ca_key_items(old), _ca_key_items(new)
    for label in sorted(old_keys.keys() & new_keys.keys()):
        changes += _compare(f"CA key {label}", old_keys[label], new_keys[label])
    return tuple(changes)


# --- a unit whose queue went to its replacement ---------------------------------------------

#: In DATA_DIR once `pipos unit export` wrote the queue for a replacement unit: this unit
#: then refuses to run, so each payment is sent by one unit (until `pipos unit reinstate`).
EXPORTED_FILE: Final = "unit-exported.json"


def unit_exported(data_dir: Path) -> dict[str, Any] | None:
    """The record `pipos unit export` left in `data_dir` (file, when, how many payments),
    or None when this unit's queue was not exported for a replacement."""
    path = data_dir / EXPORTED_FILE
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        # Damaged, but it is there: a unit export happened; refusing is the safe reading.
        return {"file": "(unreadable record)", "exported_at": None, "count": None}
    return doc if isinstance(doc, dict) else {"file": "(unreadable record)"}


def refuse_if_exported(config: TerminalConfig, config_path: Path) -> None:
    """Raise ProvisionError when this unit's queue went to a replacement (`pipos run`)."""
    record = unit_exported(config.data_dir)
    if record is None:
        return
    when = record.get("exported_at")
    date = (
        datetime.datetime.fromtimestamp(when, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        if isinstance(when, int)
        else "an unknown time"
    )
    count = record.get("count")
    waiting = f"{count} payment(s) to send" if isinstance(count, int) else "its payments"
    raise ProvisionError(
        f"terminal {config.terminal_id}: its offline queue was exported to "
        f"{record.get('file')} at {date} ({waiting}) for a replacement unit, so this unit "
        "does not run again: the replacement sends those payments. If the export was a "
        "mistake (the file will not be imported on another unit), a technician undoes it "
        f"with `pipos unit reinstate --config {config_path}`"
    )


# --- service operations on a provisioned terminal ------------------------------------------


@dataclass(frozen=True)
class ParamsUpdate:
    """What `pipos params update` did: the versions, whether anything was installed, and
    what changed (every difference, and the CA keys added, removed and refused)."""

    old_version: int | None
    new_version: int
    changed: bool
    added_ca_keys: tuple[str, ...]
    removed_ca_keys: tuple[str, ...]
    refused_ca_keys: tuple[CaKeyChange, ...]
    changes: tuple[ParamChange, ...] = ()
    #: The host re-issued the installed version with other content (the digests differ).
    same_version_changed: bool = False
    #: No installed parameters could be read to compare with (missing or damaged).
    nothing_to_compare: bool = False

    def summary_lines(self) -> list[str]:
        if not self.changed:
            return [f"parameters are up to date (version {self.new_version}, same content)"]
        if self.same_version_changed:
            lines = [
                f"parameters updated: the acquirer re-issued version {self.new_version} with "
                "other content (the content digest differs); installed"
            ]
        else:
            lines = [f"parameters updated: version {self.old_version} -> {self.new_version}"]
        if self.nothing_to_compare:
            lines.append("  (no readable installed parameters to compare with)")
        elif not (self.changes or self.added_ca_keys or self.removed_ca_keys):
            lines.append("  nothing the terminal uses changed")
        lines.extend("  " + change.line() for change in self.changes)
        if self.added_ca_keys:
            lines.append("  CA keys added:   " + ", ".join(self.added_ca_keys))
        if self.removed_ca_keys:
            lines.append("  CA keys removed: " + ", ".join(self.removed_ca_keys))
        for key in self.refused_ca_keys:
            lines.append(f"  refused CA key {key.label()}: {key.reason} ({key.expiry})")
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            "old_version": self.old_version,
            "new_version": self.new_version,
            "changed": self.changed,
            "same_version_changed": self.same_version_changed,
            "compared": not self.nothing_to_compare,
            "changes": [c.to_json() for c in self.changes],
            "ca_keys_added": list(self.added_ca_keys),
            "ca_keys_removed": list(self.removed_ca_keys),
            "ca_keys_refused": [c.__dict__ for c in self.refused_ca_keys],
        }


@dataclass(frozen=True)
class UnitTransfer:
    count: int
    added: int = 0
    already_present: int = 0
    conflicts: tuple[str, ...] = ()


class ServiceTerminal:
    """A provisioned terminal opened for a technician's service operation."""

    def __init__(
        self,
        config_path: Path,
        config: TerminalConfig,
        keystore: Keystore,
        *,
        clock: Clock = time.time,
        token: Token = os.urandom,
        scrypt_n: int = DEFAULT_SCRYPT_N,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.config_path = config_path
        self.config = config
        self.keystore = keystore
        self.audit = AuditLog(config.audit_path, clock=clock)
        # Service work on a terminal provisioned by an older version: the technician
        # credential is upgraded with the keystore, in that order (terminal.security.technician).
        upgrade_keystore(keystore, config.technician_path, self.audit)
        self.technician = TechnicianCredential(
            config.technician_path,
            self.audit,
            device_key=keystore.data_key(TECHNICIAN_KEY_PURPOSE),
            clock=clock,
            token=token,
            scrypt_n=scrypt_n,
        )
        self._clock = clock
        self._client_options = client_options

    @contextmanager
    def client(self) -> Iterator[AcquirerClient]:
        with _client(
            self.config.host_url,
            self.keystore,
            self.config.data_dir,
            tls_from_config(self.config),
            self._client_options,
        ) as client:
            yield client

    def authorise(self, secret: str, action: str) -> None:
        self.technician.verify(secret, action=action)

    def update_parameters(self, secret: str) -> ParamsUpdate:
        """Download, verify and install the host's current parameters (atomically)."""
        self.authorise(secret, "params_update")
        path = self.config.params_path
        installed = _installed_version(path)
        installed_digest = _installed_digest(path)
        before = _installed_ca_keys(path)
        before_params = _installed_params(path)
        with self.client() as client:
            try:
                signed = client.download_parameters(min_version=installed)
            except ParametersInvalidError as exc:
                self.audit.record("parameters_refused", actor="technician", reason=str(exc))
                raise ParametersRefusedError(
                    f"{exc}; the installed parameters stay in use"
                ) from exc
        digest = content_digest(signed.document)
        same_version = installed is not None and signed.version == installed
        # The content decides, not the version field: an acquirer may re-issue a version
        # with other content, and a terminal that trusted the number would keep the old.
        if same_version and digest == installed_digest:
            return ParamsUpdate(installed, signed.version, False, (), (), ())
        today = datetime.datetime.fromtimestamp(self._clock(), datetime.UTC).date()
        try:
            vetted = vet_parameters(signed, serial=self.keystore.serial, today=today)
        except ParametersRefusedError as exc:
            self.audit.record(
                "parameters_refused", actor="technician", version=signed.version, reason=str(exc)
            )
            raise
        install_parameters(
            vetted,
            self.config.data_dir,
            now=int(self._clock()),
            host_key_id=self.config.host_key_id,
        )
        after = _installed_ca_keys(path)
        self.config = self.config.with_changes(
            params_version=vetted.version, params_issued_at=signed.issued_at
        )
        save_config(self.config, self.config_path)
        update = ParamsUpdate(
            installed,
            vetted.version,
            True,
            tuple(sorted(after - before)),
            tuple(sorted(before - after)),
            vetted.refused_ca_keys,
            changes=(
                diff_parameters(before_params, vetted.params) if before_params is not None else ()
            ),
            same_version_changed=same_version,
            nothing_to_compare=before_params is None,
        )
        self.audit.record(
            "parameters_updated",
            actor="technician",
            old_version=installed,
            new_version=vetted.version,
            same_version_changed=same_version,
            content_digest=digest,
            changes=[c.line() for c in update.changes],
            ca_keys_added=list(update.added_ca_keys),
            ca_keys_removed=list(update.removed_ca_keys),
            ca_keys_refused=[c.label() for c in vetted.refused_ca_keys],
        )
        return update

    def rotate_key(self, secret: str) -> tuple[str, str]:
        """Rotate the terminal key with the host; (old key id, new key id)."""
        self.authorise(secret, "key_rotation")
        old = self.keystore.key_id
        with self.client() as client:
            new = client.rotate_key()
        self.audit.record("key_rotated", actor="technician", old_key_id=old, new_key_id=new)
        return old, new

    def _queue(self, *, create: bool) -> OfflineQueue:
        path = self.config.data_dir / QUEUE_FILE
        if not create and not path.exists():
            raise ProvisionError(f"no offline queue at {path}")
        return OfflineQueue.open(path, self.keystore.data_key(QUEUE_KEY_PURPOSE), create=create)

    def _guard(self, secret: str) -> TransferGuard:
        return TransferGuard(
            self.technician, self.audit, lambda: secret, terminal_id=self.config.terminal_id
        )

    def export_queue(self, secret: str, target: Path, passphrase: bytes) -> UnitTransfer:
        """Write the queue to an encrypted backup for the replacement unit."""
        try:
            count = export_queue_file(
                lambda: self._queue(create=False),
                target,
                lambda: passphrase,
                self._guard(secret),
                signers=lambda: keystore_signers(self.keystore),
            )
        except QueueError as exc:
            raise ProvisionError(str(exc)) from exc
        # After the file is written and read back (fsynced): from now on this unit refuses
        # to run, so its payments are sent once, by the replacement. Written atomically; a
        # crash before it leaves a runnable unit and a file the technician exports again.
        record = {
            "file": str(Path(target).resolve()),
            "exported_at": int(self._clock()),
            "count": count,
            "terminal_id": self.config.terminal_id,
        }
        atomic_write(
            self.config.data_dir / EXPORTED_FILE,
            json.dumps(record, sort_keys=True).encode("utf-8") + b"\n",
            0o600,
        )
        return UnitTransfer(count)

    def reinstate(self, secret: str) -> dict[str, Any]:
        """Undo `pipos unit export` on this unit (it runs again); the export's record.

        Safe for money even if the file was imported elsewhere too: each payment keeps its
        transaction id, the host's offline id, so the second unit to send it is answered
        that the host already has it (a duplicate), never paid twice."""
        self.authorise(secret, "unit_reinstate")
        record = unit_exported(self.config.data_dir)
        if record is None:
            raise ProvisionError(
                f"terminal {self.config.terminal_id}: its queue was not exported to a "
                "replacement unit; nothing to undo"
            )
        (self.config.data_dir / EXPORTED_FILE).unlink()
        self.audit.record("unit_reinstated", actor="technician", export=record)
        return record

    def import_queue(self, secret: str, source: Path, passphrase: bytes) -> UnitTransfer:
        """Add a backup's payments to this unit's queue (idempotent); `pipos sync` sends them.
        The old unit's keys the backup declares are believed only as far as this unit's
        acquirer confirms them (terminal.service.transfer)."""
        try:
            report = import_queue_file(
                lambda: self._queue(create=True),
                source,
                lambda: passphrase,
                self._guard(secret),
                signers=lambda: keystore_signers(self.keystore),
                confirm_keys=acquirer_key_confirmer(self.client),
            )
        except QueueError as exc:
            raise ProvisionError(str(exc)) from exc
        return UnitTransfer(
            len(report.added) + len(report.already_present),
            len(report.added),
            len(report.already_present),
            tuple(report.conflicts),
        )


def open_service_terminal(
    config_path: Path,
    *,
    clock: Clock = time.time,
    token: Token = os.urandom,
    scrypt_n: int = DEFAULT_SCRYPT_N,
    client_options: Mapping[str, Any] | None = None,
) -> ServiceTerminal:
    config = load_config(config_path)
    if not config.provisioned:
        raise ProvisionError(f"{config_path}: the terminal is not provisioned")
    keystore = Keystore.open(
        config.data_dir, config.secret_provider().load(), token=token, clock=clock
    )
    return ServiceTerminal(
        config_path,
        config,
        keystore,
        clock=clock,
        token=token,
        scrypt_n=scrypt_n,
        client_options=client_options,
    )
