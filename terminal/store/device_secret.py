"""Where the device secret comes from: the TPM, the Raspberry Pi's OTP key, or a file.

The keystore's key-encryption key is derived from the device secret (:mod:`terminal.store.keys`),
so whoever holds the secret and a copy of the SD card holds the terminal's signing key and its
card-data keys. A provider decides where the secret lives:

``tpm``
    A random 32-byte secret sealed to the TPM 2.0: a KEYEDHASH object (the secret as its
    sensitive data, attributes FIXEDTPM | FIXEDPARENT | USERWITHAUTH) created under a storage
    primary key that the TPM derives again, on every use, from its owner-hierarchy seed and a
    fixed template (:data:`PRIMARY_TEMPLATE`). Only the sealed blob (TPM2B_PRIVATE and
    TPM2B_PUBLIC, marshalled) is on disk (DATA_DIR/device-secret.tpm, 0600); the TPM decrypts
    it only for the same TPM, so a copied card does not open without the device it came from.
``rpi-otp``
    The Raspberry Pi's 256-bit device-unique private key in its OTP memory, read with
    ``rpi-otp-private-key`` (Raspberry Pi OS); the device secret is HKDF-SHA256 of it (RFC 5869)
    under a purpose label, so the OTP key itself is never stored or handed to the keystore.
``file``
    A random secret in a 0600 file. Development only: it sits on the same card as the keystore,
    so a copy of the card opens everything; `pipos doctor` warns.

Every failure is a :class:`DeviceSecretError` (a :class:`KeystoreError`), the TSS's own
exceptions translated here; no message carries secret or key material.

    KeystoreError
    └── DeviceSecretError            the provider cannot give the secret (missing, unreachable)
        └── ForeignDeviceError       the TPM refuses the sealed blob: sealed on another device
"""

from __future__ import annotations

import abc
import base64
import binascii
import importlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .keys import KeystoreError, atomic_write, secret_from_file

__all__ = [
    "DEFAULT_OTP_COMMAND",
    "DEFAULT_TCTI",
    "PROVIDERS",
    "SEALED_FILE",
    "DeviceSecretError",
    "DeviceSecretProvider",
    "FileSecret",
    "ForeignDeviceError",
    "RpiOtpSecret",
    "TpmSecret",
    "make_provider",
]

PROVIDERS: Final = ("tpm", "rpi-otp", "file")
#: The kernel's TPM resource manager: several processes may use the TPM at once through it.
DEFAULT_TCTI: Final = "device:/dev/tpmrm0"
DEFAULT_OTP_COMMAND: Final = "rpi-otp-private-key"
SEALED_FILE: Final = "device-secret.tpm"
SEALED_FORMAT: Final = "pipos-tpm-sealed-1"
SECRET_LENGTH: Final = 32
#: The storage primary key's template, fixed so that the TPM derives the same key from its
#: owner seed each time: nothing about the parent needs to be stored, and it never leaves the
#: TPM. ECC P-256 is fast to derive (a few ms) where RSA-2048 can take seconds on a TPM chip.
PRIMARY_TEMPLATE: Final = "ecc256:aes128cfb"
_OTP_INFO: Final = b"pipos device secret v1: rpi-otp"
_OTP_TIMEOUT: Final = 10.0

Token = Callable[[int], bytes]


class DeviceSecretError(KeystoreError):
    """The device secret cannot be had from its provider; the message says why and what to do."""


class ForeignDeviceError(DeviceSecretError):
    """The TPM refuses the sealed blob: sealed by another TPM (or this one was cleared since)."""


class DeviceSecretProvider(abc.ABC):
    """One place the device secret lives. `load` reads it; `create` sets it up at provisioning."""

    kind: ClassVar[str]
    #: True for a provider whose secret sits on the same storage as the keystore.
    development_only: ClassVar[bool] = False

    @abc.abstractmethod
    def describe(self) -> str:
        """Where the secret is, for people (never the secret itself)."""

    @abc.abstractmethod
    def exists(self) -> bool:
        """Whether a secret has been set up here (a sealed blob, a file; the OTP key is)."""

    @abc.abstractmethod
    def load(self) -> bytes:
        """The device secret; :class:`DeviceSecretError` when it cannot be had."""

    @abc.abstractmethod
    def create(self, token: Token, *, replace: bool = False) -> bytes:
        """Set up a new secret and return it; refuses to replace one unless `replace`."""

    def ensure(self, token: Token) -> bytes:
        """The secret, created when there is none yet (provisioning)."""
        return self.load() if self.exists() else self.create(token)

    def probe(self) -> str:
        """Check that the provider's device answers (the TPM); what it is, for doctor. Whether
        the secret itself is there is :meth:`load`'s."""
        return self.describe()

    @abc.abstractmethod
    def discard(self) -> None:
        """Remove what this provider keeps on disk (after the keystore moved to another one)."""


# --- file ----------------------------------------------------------------------------------


class FileSecret(DeviceSecretProvider):
    """A random secret in a 0600 file (development only: it travels with the SD card)."""

    kind = "file"
    development_only = True

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def describe(self) -> str:
        return f"file {self.path}"

    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> bytes:
        return secret_from_file(self.path)

    def create(self, token: Token, *, replace: bool = False) -> bytes:
        if self.path.exists() and not replace:
            raise DeviceSecretError(
                f"device secret {self.path} already exists; refusing to replace"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(self.path, token(SECRET_LENGTH).hex().encode("ascii") + b"\n", mode=0o600)
        return self.load()

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


# --- Raspberry Pi OTP ----------------------------------------------------------------------


_HEX_KEY: Final = re.compile(r"[0-9a-fA-F]{64}")


class RpiOtpSecret(DeviceSecretProvider):
    """The secret derived (HKDF-SHA256) from the Pi's OTP device-unique private key.

    ``rpi-otp-private-key`` prints the key as 64 hex digits; all zeros means it was never
    programmed. Programming it (``rpi-otp-private-key -w``) is irreversible, so pipos never does
    it on its own: the technician does, once, before provisioning.
    """

    kind = "rpi-otp"

    def __init__(self, command: str = DEFAULT_OTP_COMMAND, *, timeout: float = _OTP_TIMEOUT):
        self.command = command
        self.timeout = timeout

    def describe(self) -> str:
        return f"Raspberry Pi OTP device-unique key (read with {self.command})"

    def exists(self) -> bool:
        return True  # the key is in the SoC; whether it is programmed, load() says

    def _read_key(self) -> bytes:
        executable = shutil.which(self.command)
        if executable is None:
            raise DeviceSecretError(
                f"{self.command}: command not found; it ships with Raspberry Pi OS (the "
                "raspberrypi/utils tools); give its path with --otp-command"
            )
        try:
            # The configured command, run without a shell and without arguments.
            done = subprocess.run(  # noqa: S603
                [executable],
                capture_output=True,
                timeout=self.timeout,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise DeviceSecretError(
                f"{self.command}: no answer within {self.timeout:g} s (is the firmware "
                "mailbox /dev/vcio busy?)"
            ) from exc
        except OSError as exc:
            raise DeviceSecretError(f"{self.command}: cannot run it ({exc.strerror})") from exc
        if done.returncode != 0:
            # stderr is the tool's own complaint (no key there); a short excerpt says why.
            why = done.stderr.decode("utf-8", "replace").strip().splitlines()
            raise DeviceSecretError(
                f"{self.command} failed (exit status {done.returncode})"
                + (f": {why[-1][:200]}" if why else "")
                + "; the terminal's user needs access to /dev/vcio (group video)"
            )
        text = done.stdout.decode("ascii", "replace").strip()
        # Never echo what it printed: when it is the key, that would put it in a log.
        if not _HEX_KEY.fullmatch(text):
            raise DeviceSecretError(
                f"{self.command} printed something that is not a 256-bit key in hex "
                f"({len(text)} characters, 64 hex digits expected); is this a Raspberry Pi "
                "with the OTP private key feature (Pi 4, Pi 5, CM4)?"
            )
        key = bytes.fromhex(text)
        if not any(key):
            raise DeviceSecretError(
                f"{self.command}: the OTP device-unique private key is not programmed (all "
                "zeros). Program it once, irreversibly: sudo rpi-otp-private-key -w "
                '"$(openssl rand -hex 32)"; then provision again'
            )
        return key

    def load(self) -> bytes:
        hkdf = HKDF(algorithm=hashes.SHA256(), length=SECRET_LENGTH, salt=None, info=_OTP_INFO)
        return hkdf.derive(self._read_key())

    def create(self, token: Token, *, replace: bool = False) -> bytes:
        return self.load()  # nothing to store: the same key gives the same secret

    def discard(self) -> None:
        pass  # nothing on disk; the OTP key cannot be erased (and stays the Pi's own)


# --- TPM 2.0 -------------------------------------------------------------------------------


def _tss() -> Any:
    """tpm2-pytss, imported when a TPM is used (the `tpm` extra; a file terminal needs none)."""
    # The TSS's C libraries log every failure to stderr on their own; the errors are translated
    # into clear messages here, so its log is turned down unless someone asked for it.
    os.environ.setdefault("TSS2_LOG", "all+none")
    try:
        # By name: tpm2-pytss ships no type information, and the terminal without the extra
        # must still type-check and import.
        return importlib.import_module("tpm2_pytss")
    except ImportError as exc:
        raise DeviceSecretError(
            "the tpm device-secret provider needs tpm2-pytss (pip install 'pipos[tpm]'; "
            "Debian: libtss2-dev and pkg-config to build it)"
        ) from exc


def _tss_layer(rc: int) -> int:
    """The TSS layer of a response code (0: the TPM itself; 10: the TCTI transport)."""
    return (rc >> 16) & 0xFF


class TpmSecret(DeviceSecretProvider):
    """A random secret sealed to this device's TPM 2.0; see the module documentation."""

    kind = "tpm"

    def __init__(self, blob_path: Path, tcti: str = DEFAULT_TCTI) -> None:
        self.blob_path = Path(blob_path)
        self.tcti = tcti

    def describe(self) -> str:
        return f"TPM 2.0 through {self.tcti}, sealed blob {self.blob_path}"

    def exists(self) -> bool:
        return self.blob_path.exists()

    # --- the TPM conversation ---

    def _esapi(self, tss: Any) -> Any:
        try:
            return tss.ESAPI(self.tcti)
        except tss.TSS2_Exception as exc:
            raise DeviceSecretError(
                f"cannot reach the TPM through {self.tcti} ({exc}): check that the TPM is "
                "enabled (on a Pi: dtoverlay=tpm-slb9670 in /boot/firmware/config.txt), that "
                "/dev/tpmrm0 exists and that the terminal's user is in group tss"
            ) from exc
        except (RuntimeError, ValueError) as exc:  # a TCTI string it cannot parse
            raise DeviceSecretError(f"TPM TCTI {self.tcti!r}: {exc}") from exc

    def _primary(self, tss: Any, esapi: Any) -> Any:
        attrs = (
            tss.TPMA_OBJECT.RESTRICTED
            | tss.TPMA_OBJECT.DECRYPT
            | tss.TPMA_OBJECT.FIXEDTPM
            | tss.TPMA_OBJECT.FIXEDPARENT
            | tss.TPMA_OBJECT.SENSITIVEDATAORIGIN
            | tss.TPMA_OBJECT.USERWITHAUTH
        )
        template = tss.TPM2B_PUBLIC.parse(PRIMARY_TEMPLATE, objectAttributes=attrs)
        try:
            handle, *_ = esapi.create_primary(
                tss.TPM2B_SENSITIVE_CREATE(), template, tss.ESYS_TR.OWNER
            )
        except tss.TSS2_Exception as exc:
            raise self._translate(exc, "create the storage key (owner hierarchy)") from exc
        return handle

    def _translate(self, exc: Any, doing: str) -> DeviceSecretError:
        tss = _tss()
        if _tss_layer(int(exc.rc)) != 0:
            return DeviceSecretError(f"the TPM through {self.tcti} stopped answering ({exc})")
        if int(exc.error) in (tss.TPM2_RC.BAD_AUTH, tss.TPM2_RC.AUTH_FAIL, tss.TPM2_RC.LOCKOUT):
            return DeviceSecretError(
                f"the TPM refused to {doing}: the owner hierarchy has a password or is locked "
                f"out ({exc}); pipos uses the owner hierarchy without one"
            )
        return DeviceSecretError(f"the TPM refused to {doing} ({exc})")

    def probe(self) -> str:
        tss = _tss()
        with self._esapi(tss) as esapi:
            try:
                _more, data = esapi.get_capability(
                    tss.TPM2_CAP.TPM_PROPERTIES, tss.TPM2_PT.MANUFACTURER, 1
                )
            except tss.TSS2_Exception as exc:
                raise self._translate(exc, "report its manufacturer") from exc
            value = int(data.data.tpmProperties.tpmProperty[0].value)
        vendor = value.to_bytes(4, "big").decode("ascii", "replace").strip("\x00 ") or "?"
        return f"TPM 2.0 (manufacturer {vendor}) answers through {self.tcti}"

    def create(self, token: Token, *, replace: bool = False) -> bytes:
        if self.blob_path.exists() and not replace:
            raise DeviceSecretError(
                f"sealed device secret {self.blob_path} already exists; refusing to replace"
            )
        secret = token(SECRET_LENGTH)
        tss = _tss()
        with self._esapi(tss) as esapi:
            primary = self._primary(tss, esapi)
            try:
                sensitive = tss.TPM2B_SENSITIVE_CREATE(
                    tss.TPMS_SENSITIVE_CREATE(data=tss.TPM2B_SENSITIVE_DATA(secret))
                )
                # A sealed data object: no sign or decrypt use, only unseal; bound to this TPM
                # (FIXEDTPM) and to its parent (FIXEDPARENT), unsealed with an empty auth value.
                public = tss.TPM2B_PUBLIC(
                    tss.TPMT_PUBLIC(
                        type=tss.TPM2_ALG.KEYEDHASH,
                        nameAlg=tss.TPM2_ALG.SHA256,
                        objectAttributes=tss.TPMA_OBJECT.FIXEDTPM
                        | tss.TPMA_OBJECT.FIXEDPARENT
                        | tss.TPMA_OBJECT.USERWITHAUTH,
                    )
                )
                public.publicArea.parameters.keyedHashDetail.scheme.scheme = tss.TPM2_ALG.NULL
                private, sealed_public, *_ = esapi.create(primary, sensitive, public)
            except tss.TSS2_Exception as exc:
                raise self._translate(exc, "seal the device secret") from exc
            finally:
                esapi.flush_context(primary)
        document = {
            "format": SEALED_FORMAT,
            "primary": f"owner/{PRIMARY_TEMPLATE}",
            "private": base64.b64encode(bytes(private.marshal())).decode("ascii"),
            "public": base64.b64encode(bytes(sealed_public.marshal())).decode("ascii"),
        }
        self.blob_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(
            self.blob_path, json.dumps(document, indent=2).encode("utf-8") + b"\n", mode=0o600
        )
        # Read back through the TPM: what provisioning keys the keystore with is what unseals.
        if self.load() != secret:
            raise DeviceSecretError("the TPM unsealed something other than what it sealed")
        return secret

    def _read_blob(self) -> tuple[bytes, bytes]:
        path = self.blob_path
        try:
            doc = json.loads(path.read_bytes())
        except FileNotFoundError as exc:
            raise DeviceSecretError(
                f"sealed device secret {path}: not found; provision the terminal "
                "(pipos provision --secret tpm)"
            ) from exc
        except OSError as exc:
            raise DeviceSecretError(f"sealed device secret {path}: cannot read ({exc})") from exc
        except ValueError as exc:
            raise DeviceSecretError(f"sealed device secret {path}: not valid JSON") from exc
        if not isinstance(doc, dict) or doc.get("format") != SEALED_FORMAT:
            raise DeviceSecretError(f"sealed device secret {path}: expected {SEALED_FORMAT!r}")
        if doc.get("primary") != f"owner/{PRIMARY_TEMPLATE}":
            raise DeviceSecretError(
                f"sealed device secret {path}: sealed under {doc.get('primary')!r}, this "
                f"version knows owner/{PRIMARY_TEMPLATE}"
            )
        try:
            return (
                base64.b64decode(doc["private"], validate=True),
                base64.b64decode(doc["public"], validate=True),
            )
        except (KeyError, TypeError, binascii.Error) as exc:
            raise DeviceSecretError(f"sealed device secret {path}: malformed") from exc

    def load(self) -> bytes:
        private_raw, public_raw = self._read_blob()
        tss = _tss()
        try:
            private, _ = tss.TPM2B_PRIVATE.unmarshal(private_raw)
            public, _ = tss.TPM2B_PUBLIC.unmarshal(public_raw)
        except (tss.TSS2_Exception, ValueError, TypeError) as exc:
            raise DeviceSecretError(f"sealed device secret {self.blob_path}: malformed") from exc
        with self._esapi(tss) as esapi:
            primary = self._primary(tss, esapi)
            try:
                sealed = esapi.load(primary, private, public)
            except tss.TSS2_Exception as exc:
                if _tss_layer(int(exc.rc)) != 0:
                    raise self._translate(exc, "load the sealed secret") from exc
                # The TPM checks the blob's integrity under a key only it can derive (from its
                # own seed): a blob from another TPM, or from before a TPM clear, fails here.
                raise ForeignDeviceError(
                    f"the TPM refused to unseal ({exc}): this data dir was sealed on another "
                    f"device (or this TPM was cleared since); {self.blob_path} opens only on "
                    "the terminal that provisioned it. Re-provision this unit "
                    "(pipos provision --secret tpm --force) to give it its own keys"
                ) from exc
            finally:
                esapi.flush_context(primary)
            try:
                data = esapi.unseal(sealed)
            except tss.TSS2_Exception as exc:
                raise self._translate(exc, "unseal the device secret") from exc
            finally:
                esapi.flush_context(sealed)
        secret = bytes(data)
        if len(secret) != SECRET_LENGTH:
            raise DeviceSecretError(
                f"sealed device secret {self.blob_path}: unsealed {len(secret)} bytes, "
                f"expected {SECRET_LENGTH}"
            )
        return secret

    def discard(self) -> None:
        self.blob_path.unlink(missing_ok=True)


def make_provider(
    kind: str,
    *,
    data_dir: Path,
    secret_file: Path | None = None,
    tcti: str | None = None,
    otp_command: str | None = None,
) -> DeviceSecretProvider:
    """The provider named `kind` with its options (from the configuration or the command)."""
    if kind == "tpm":
        return TpmSecret(Path(data_dir) / SEALED_FILE, tcti or DEFAULT_TCTI)
    if kind == "rpi-otp":
        return RpiOtpSecret(otp_command or DEFAULT_OTP_COMMAND)
    if kind == "file":
        return FileSecret(secret_file or Path(data_dir) / "device-secret")
    raise DeviceSecretError(
        f"unknown device-secret provider {kind!r} (expected one of: {', '.join(PROVIDERS)})"
    )
