"""The terminal's keys: its Ed25519 signing key, data-encryption keys and sequence counter.

Everything sensitive in the keystore file is encrypted with AES-256-GCM under a
key-encryption key (KEK) derived with scrypt (RFC 7914) from a device secret or passphrase,
so a copied SD card image does not yield the signing key without the secret (where the secret
lives, a TPM, the Pi's OTP key or a file, is :mod:`terminal.store.device_secret`). The file is
created with mode 0600 and replaced atomically (write, fsync, rename, fsync directory), so a
crash leaves either the old or the new keystore, never a torn one.

The parts kept in clear (the identity block: serial, terminal id, merchant id, host public key;
the public keys) are authenticated: format ``pipos-keystore-2`` carries an HMAC-SHA256 over the
whole document (canonical JSON) under a key derived from the encrypted master secret, so they
cannot be swapped (say, the host key for an attacker's) without the device secret. A
``pipos-keystore-1`` file (no MAC) still opens and is written as format 2 at its next save
(:meth:`Keystore.upgrade`); its master secret is then encrypted under a format-2 label, so a
format-2 file relabelled as format 1 to drop the MAC does not open.

The private key never leaves this module: callers get a :class:`terminal.domain.signing.Signer`
(a key id and a sign function). Nothing here logs key material.
"""

from __future__ import annotations

import fcntl
import hmac
import json
import os
import stat
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ..domain.errors import TerminalError
from ..domain.signing import Signer, b64decode, b64encode, key_id_for

FORMAT: Final = "pipos-keystore-2"
#: Opened and upgraded (no MAC over the identity block); never written.
LEGACY_FORMAT: Final = "pipos-keystore-1"
_MASTER_AAD: Final = {LEGACY_FORMAT: b"pipos-master-secret", FORMAT: b"pipos-master-secret:2"}
_MAC_INFO: Final = b"pipos keystore mac v2"
#: The sealed secrets' key (HKDF info) and each one's associated data (then its name).
_SECRETS_INFO: Final = b"pipos keystore secrets v1"
_SECRET_AAD: Final = b"pipos-secret:"
KEYSTORE_FILE: Final = "keystore.json"
SEQUENCE_FILE: Final = "sequence.json"
# scrypt cost: N=2^15, r=8 needs 32 MiB and ~0.1 s on a Pi-class CPU; stored in the file so it
# can be raised later without breaking existing keystores.
DEFAULT_SCRYPT_N: Final = 2**15
_SCRYPT_R: Final = 8
_SCRYPT_P: Final = 1

Token = Callable[[int], bytes]
Clock = Callable[[], float]


class KeystoreError(TerminalError):
    """The keystore is missing, corrupt, locked with another secret or unsafe."""


class WrongSecretError(KeystoreError):
    """The device secret or passphrase does not open this keystore."""


class KeystoreTamperedError(KeystoreError):
    """The keystore opens with the secret, but what it keeps in clear was changed without it."""


class SequenceError(TerminalError):
    """The sequence counter file is corrupt or already in use by another process."""


def secret_from_file(path: str | os.PathLike[str]) -> bytes:
    """Read a device secret file (e.g. provisioned into /etc/pipos/device-secret, mode 0600)."""
    p = Path(path)
    try:
        info = p.stat()
        data = p.read_bytes()
    except OSError as exc:
        raise KeystoreError(f"device secret {p}: cannot read ({exc.strerror})") from exc
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeystoreError(f"device secret {p}: readable by group or others; chmod 600 it")
    if len(data.strip()) < 16:
        raise KeystoreError(f"device secret {p}: too short (need at least 16 bytes)")
    return data.strip()


def secret_from_passphrase(passphrase: str) -> bytes:
    if len(passphrase) < 8:
        raise KeystoreError("passphrase: too short (need at least 8 characters)")
    return passphrase.encode("utf-8")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data` so that a crash leaves the old or the new content."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


@dataclass(frozen=True)
class PublicKeyInfo:
    key_id: str
    public_key: bytes
    created: int
    retired: int | None = None


@dataclass(frozen=True)
class EnrolmentIdentity:
    """What a technician or the enrolment request hands to the acquirer."""

    serial: str
    key_id: str
    public_key: bytes
    terminal_id: str | None
    merchant_id: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "serial": self.serial,
            "key_id": self.key_id,
            "public_key": b64encode(self.public_key),
            "terminal_id": self.terminal_id,
            "merchant_id": self.merchant_id,
        }


def _private_from_seed(seed: bytes) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(seed)


def _public_raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _seed(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )


class Keystore:
    """An open keystore. Create with :meth:`create`, open with :meth:`open`.

    Not safe to share between processes while rotating; safe between threads.
    """

    def __init__(
        self,
        directory: Path,
        document: dict[str, Any],
        kek: bytes,
        *,
        token: Token,
        clock: Clock,
    ) -> None:
        self._dir = directory
        self._doc = document
        self._kek = AESGCM(kek)
        self._token = token
        self._clock = clock
        self._lock = threading.RLock()
        fmt = document.get("format")
        try:
            self._master = self._decrypt(document["master"], _MASTER_AAD[str(fmt)])
        except WrongSecretError:
            if fmt == LEGACY_FORMAT and self._opens(document["master"], _MASTER_AAD[FORMAT]):
                # A format-2 keystore relabelled as format 1, to be opened without its MAC.
                raise KeystoreTamperedError(
                    f"keystore {self.path_in(directory)}: relabelled as {LEGACY_FORMAT!r} "
                    "after it was upgraded; it was altered without the device secret"
                ) from None
            raise
        except KeyError as exc:
            raise KeystoreError(f"keystore {self.path_in(directory)}: malformed") from exc
        if fmt == FORMAT:
            self._check_mac(document)
        self._current = self._unwrap_key(document["current"])
        pending = document.get("pending")
        self._pending = self._unwrap_key(pending) if pending else None

    def __repr__(self) -> str:  # never show key material
        return f"Keystore({str(self._dir)!r}, key_id={self.key_id!r})"

    # --- construction -----------------------------------------------------------------

    @staticmethod
    def path_in(directory: str | os.PathLike[str]) -> Path:
        return Path(directory) / KEYSTORE_FILE

    @classmethod
    def exists(cls, directory: str | os.PathLike[str]) -> bool:
        return cls.path_in(directory).exists()

    @classmethod
    def create(
        cls,
        directory: str | os.PathLike[str],
        secret: bytes,
        *,
        serial: str | None = None,
        token: Token = os.urandom,
        clock: Clock = time.time,
        scrypt_n: int = DEFAULT_SCRYPT_N,
    ) -> Keystore:
        """Generate a new signing key and master secret. Refuses to overwrite a keystore."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        if cls.exists(d):
            raise KeystoreError(f"keystore {cls.path_in(d)} already exists; refusing to replace")
        salt = token(16)
        kdf = {"name": "scrypt", "salt": b64encode(salt), "n": scrypt_n, "r": _SCRYPT_R}
        kdf["p"] = _SCRYPT_P
        kek = _derive_kek(secret, kdf)
        aes = AESGCM(kek)
        now = int(clock())
        doc: dict[str, Any] = {
            "format": FORMAT,
            "kdf": kdf,
            "identity": {
                "serial": serial or "PIPOS-" + token(6).hex().upper(),
                "terminal_id": None,
                "merchant_id": None,
                "host_public_key": None,
                "host_key_id": None,
            },
            "current": _wrap_key(aes, _private_from_seed(token(32)), now, token),
            "pending": None,
            "retired": [],
        }
        master = token(32)
        doc["master"] = _encrypt(aes, master, _MASTER_AAD[FORMAT], token)
        doc["mac"] = _document_mac(_mac_key_from_master(master), doc)
        atomic_write(cls.path_in(d), _dump(doc))
        return cls(d, doc, kek, token=token, clock=clock)

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        secret: bytes,
        *,
        token: Token = os.urandom,
        clock: Clock = time.time,
    ) -> Keystore:
        path = cls.path_in(directory)
        try:
            raw = path.read_bytes()
        except FileNotFoundError as exc:
            raise KeystoreError(f"keystore {path}: not found; create it first") from exc
        except OSError as exc:
            raise KeystoreError(f"keystore {path}: cannot read ({exc.strerror})") from exc
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise KeystoreError(f"keystore {path}: not valid JSON") from exc
        if not isinstance(doc, dict) or doc.get("format") not in _MASTER_AAD:
            raise KeystoreError(f"keystore {path}: expected format {FORMAT!r}")
        try:
            kek = _derive_kek(secret, doc["kdf"])
        except (KeyError, TypeError, ValueError) as exc:
            raise KeystoreError(
                f"keystore {path}: its key derivation settings are malformed"
            ) from exc
        return cls(Path(directory), doc, kek, token=token, clock=clock)

    # --- keys ---------------------------------------------------------------------------

    @property
    def key_id(self) -> str:
        return str(self._doc["current"]["key_id"])

    @property
    def public_key(self) -> bytes:
        return _public_raw(self._current)

    def signer(self) -> Signer:
        """The current key, as a signer (key id + sign function)."""
        key = self._current
        return Signer(key_id=self.key_id, sign=key.sign, public_key=_public_raw(key))

    def pending_signer(self) -> Signer | None:
        if self._pending is None:
            return None
        key = self._pending
        pub = _public_raw(key)
        return Signer(key_id=key_id_for(pub), sign=key.sign, public_key=pub)

    def sign(self, message: bytes) -> bytes:
        """Sign any record (e.g. an offline transaction) with the current terminal key."""
        return self._current.sign(message)

    def public_keys(self) -> list[PublicKeyInfo]:
        """Every public key this terminal has used: retired ones first, the current one last."""
        out = [
            PublicKeyInfo(
                key_id=str(r["key_id"]),
                public_key=b64decode(r["public_key"], "public key"),
                created=int(r["created"]),
                retired=int(r["retired"]),
            )
            for r in self._doc["retired"]
        ]
        cur = self._doc["current"]
        out.append(
            PublicKeyInfo(
                key_id=str(cur["key_id"]),
                public_key=b64decode(cur["public_key"], "public key"),
                created=int(cur["created"]),
            )
        )
        return out

    def begin_rotation(self) -> Signer:
        """Generate (or return the already generated) next key, persisted before use.

        Two-phase so that a crash between "host accepted the new key" and "terminal switched"
        never strands the terminal: the pending key survives restarts until committed.
        """
        with self._lock:
            if self._pending is None:
                key = _private_from_seed(self._token(32))
                self._doc["pending"] = _wrap_key(self._aes(), key, int(self._clock()), self._token)
                self._save()
                self._pending = key
            signer = self.pending_signer()
            assert signer is not None
            return signer

    def commit_rotation(self) -> str:
        """Make the pending key current; the old public key is kept (retired) for audit."""
        with self._lock:
            if self._pending is None:
                raise KeystoreError("no key rotation in progress")
            old = self._doc["current"]
            self._doc["retired"].append(
                {
                    "key_id": old["key_id"],
                    "public_key": old["public_key"],
                    "created": old["created"],
                    "retired": int(self._clock()),
                }
            )
            self._doc["current"] = self._doc["pending"]
            self._doc["pending"] = None
            self._save()
            self._current, self._pending = self._pending, None
            return self.key_id

    def rotate(self) -> str:
        """Local rotation in one step (for terminals not yet enrolled); returns the new key id."""
        self.begin_rotation()
        return self.commit_rotation()

    def change_secret(self, new_secret: bytes, *, scrypt_n: int | None = None) -> None:
        """Re-encrypt everything under a KEK derived from `new_secret`."""
        with self._lock:
            kdf = dict(self._doc["kdf"])
            kdf["salt"] = b64encode(self._token(16))
            if scrypt_n is not None:
                kdf["n"] = scrypt_n
            aes = AESGCM(_derive_kek(new_secret, kdf))
            self._doc["kdf"] = kdf
            self._doc["current"] = _wrap_key(
                aes, self._current, int(self._doc["current"]["created"]), self._token
            )
            if self._pending is not None:
                self._doc["pending"] = _wrap_key(
                    aes, self._pending, int(self._doc["pending"]["created"]), self._token
                )
            self._doc["master"] = _encrypt(aes, self._master, _MASTER_AAD[FORMAT], self._token)
            self._doc["format"] = FORMAT
            self._kek = aes
            self._save()

    @property
    def needs_upgrade(self) -> bool:
        """An older format whose identity block is not authenticated yet."""
        return self._doc.get("format") != FORMAT

    def upgrade(self) -> bool:
        """Write the keystore in the current format (a MAC over its clear parts); True if done."""
        with self._lock:
            if not self.needs_upgrade:
                return False
            self._save()
            return True

    # --- data keys ----------------------------------------------------------------------

    def data_key(self, purpose: str) -> bytes:
        """A 32-byte AES key for `purpose` (e.g. "offline-queue/card-data"), via HKDF-SHA256.

        Derived from the stored random master secret, so it is stable across restarts and key
        rotations, and distinct per purpose (RFC 5869 §3.2: the info string separates uses).
        """
        if not purpose:
            raise KeystoreError("data key purpose must be a non-empty string")
        hkdf = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=None,
            info=b"pipos data key v1:" + purpose.encode("utf-8"),
        )
        return hkdf.derive(self._master)

    # --- sealed secrets -----------------------------------------------------------------

    def secret(self, name: str) -> bytes | None:
        """The secret kept under `name` (:meth:`set_secrets`), or None."""
        entry = self._doc.get("secrets", {}).get(name)
        if entry is None:
            return None
        try:
            nonce = b64decode(entry["nonce"], "nonce")
            return self._secrets().decrypt(
                nonce, b64decode(entry["ciphertext"], "ciphertext"), _SECRET_AAD + name.encode()
            )
        except (InvalidTag, KeyError, TypeError) as exc:
            raise KeystoreError(f"keystore: the secret {name!r} does not open") from exc

    def set_secrets(self, values: Mapping[str, bytes | None]) -> None:
        """Keep each key a party gave the terminal (the ISO 8583 link's terminal master key
        and session keys) sealed under its name, None removing it; all in one durable write
        (atomic replace) before this returns. Sealed with AES-256-GCM under a key derived
        from the master secret (so :meth:`change_secret` leaves them as they are), each bound
        to its name, and covered by the document's MAC like everything else here."""
        with self._lock:
            secrets = dict(self._doc.get("secrets", {}))
            for name, value in values.items():
                if not name:
                    raise KeystoreError("a secret's name must be a non-empty string")
                if value is None:
                    secrets.pop(name, None)
                else:
                    aad = _SECRET_AAD + name.encode()
                    secrets[name] = _encrypt(self._secrets(), value, aad, self._token)
            self._doc["secrets"] = secrets
            self._save()

    def _secrets(self) -> AESGCM:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_SECRETS_INFO)
        return AESGCM(key.derive(self._master))

    # --- identity -----------------------------------------------------------------------

    @property
    def serial(self) -> str:
        return str(self._doc["identity"]["serial"])

    @property
    def terminal_id(self) -> str | None:
        value = self._doc["identity"]["terminal_id"]
        return None if value is None else str(value)

    @property
    def merchant_id(self) -> str | None:
        value = self._doc["identity"]["merchant_id"]
        return None if value is None else str(value)

    @property
    def host_public_key(self) -> bytes | None:
        value = self._doc["identity"]["host_public_key"]
        return None if value is None else b64decode(value, "host public key")

    def identity(self) -> EnrolmentIdentity:
        """Public key and terminal identity, for enrolment or a technician's screen."""
        return EnrolmentIdentity(
            serial=self.serial,
            key_id=self.key_id,
            public_key=self.public_key,
            terminal_id=self.terminal_id,
            merchant_id=self.merchant_id,
        )

    def set_enrolment(
        self, *, terminal_id: str, merchant_id: str, host_public_key: bytes, host_key_id: str
    ) -> None:
        with self._lock:
            ident = self._doc["identity"]
            ident["terminal_id"] = terminal_id
            ident["merchant_id"] = merchant_id
            ident["host_public_key"] = b64encode(host_public_key)
            ident["host_key_id"] = host_key_id
            self._save()

    # --- internals ----------------------------------------------------------------------

    def _aes(self) -> AESGCM:
        return self._kek

    def _unwrap_key(self, entry: dict[str, Any]) -> Ed25519PrivateKey:
        seed = self._decrypt(entry, b"pipos-signing-key:" + str(entry["key_id"]).encode())
        key = _private_from_seed(seed)
        if key_id_for(_public_raw(key)) != entry["key_id"]:
            raise KeystoreError("keystore: key id does not match the stored key")
        return key

    def _decrypt(self, entry: dict[str, Any], aad: bytes) -> bytes:
        try:
            nonce = b64decode(entry["nonce"], "nonce")
            return self._kek.decrypt(nonce, b64decode(entry["ciphertext"], "ciphertext"), aad)
        except InvalidTag as exc:
            raise WrongSecretError(
                "keystore: the device secret or passphrase is not correct"
            ) from exc
        except (KeyError, TypeError) as exc:
            raise KeystoreError("keystore: an encrypted entry is malformed") from exc

    def _opens(self, entry: dict[str, Any], aad: bytes) -> bool:
        try:
            self._decrypt(entry, aad)
        except KeystoreError:
            return False
        return True

    def _mac_key(self) -> bytes:
        return _mac_key_from_master(self._master)

    def _check_mac(self, doc: dict[str, Any]) -> None:
        stored = doc.get("mac")
        expected = _document_mac(self._mac_key(), doc)
        if not isinstance(stored, str) or not hmac.compare_digest(stored, expected):
            raise KeystoreTamperedError(
                f"keystore {self.path_in(self._dir)}: its identity block (terminal id, merchant "
                "id, host public key) or public keys were altered without the device secret; "
                "restore the keystore from a backup or re-provision the terminal"
            )

    def _save(self) -> None:
        doc = self._doc
        if doc.get("format") != FORMAT:
            # The upgrade from format 1: the master secret under the format-2 label (so the
            # file cannot be relabelled back to drop the MAC), then the MAC.
            doc["master"] = _encrypt(self._kek, self._master, _MASTER_AAD[FORMAT], self._token)
            doc["format"] = FORMAT
        doc["mac"] = _document_mac(self._mac_key(), doc)
        atomic_write(self.path_in(self._dir), _dump(doc))


def _mac_key_from_master(master: bytes) -> bytes:
    # HKDF over the master secret with its own label: apart from every data key (RFC 5869 §3.2).
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_MAC_INFO).derive(master)


def _document_mac(key: bytes, doc: dict[str, Any]) -> str:
    """HMAC-SHA256 over the document without its MAC, as canonical JSON (sorted keys, no
    spaces, ASCII): the identity block, every public key and every encrypted entry."""
    body = {k: v for k, v in doc.items() if k != "mac"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return b64encode(hmac.digest(key, canonical.encode("ascii"), "sha256"))


def _dump(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, indent=2, sort_keys=True).encode("utf-8") + b"\n"


def _derive_kek(secret: bytes, kdf: dict[str, Any]) -> bytes:
    if kdf.get("name") != "scrypt":
        raise KeystoreError(f"keystore: unsupported KDF {kdf.get('name')!r}")
    if not secret:
        raise KeystoreError("keystore: empty secret")
    scrypt = Scrypt(
        salt=b64decode(kdf["salt"], "salt"),
        length=32,
        n=int(kdf["n"]),
        r=int(kdf["r"]),
        p=int(kdf["p"]),
    )
    return scrypt.derive(secret)


def _encrypt(aes: AESGCM, plaintext: bytes, aad: bytes, token: Token) -> dict[str, str]:
    nonce = token(12)
    return {"nonce": b64encode(nonce), "ciphertext": b64encode(aes.encrypt(nonce, plaintext, aad))}


def _wrap_key(aes: AESGCM, key: Ed25519PrivateKey, created: int, token: Token) -> dict[str, Any]:
    public = _public_raw(key)
    key_id = key_id_for(public)
    entry: dict[str, Any] = {
        "key_id": key_id,
        "public_key": b64encode(public),
        "created": created,
    }
    entry.update(_encrypt(aes, _seed(key), b"pipos-signing-key:" + key_id.encode(), token))
    return entry


class SequenceCounter:
    """A request sequence number that only increases, across restarts and crashes.

    Write-ahead reservation: before handing out a number, the upper end of a block of
    `block` numbers is written to disk (atomic replace + fsync of file and directory). After a
    crash the counter resumes above the last reserved block, so a number may be skipped but is
    never reused. An exclusive lock (flock) keeps a second process from using the same file:
    two writers could interleave numbers and the host would reject the smaller ones.
    """

    def __init__(self, path: str | os.PathLike[str], *, block: int = 16) -> None:
        if block < 1:
            raise SequenceError("block must be at least 1")
        self._path = Path(path)
        self._block = block
        self._mutex = threading.Lock()
        self._path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self._path.with_name(self._path.name + ".lock")
        self._lock_fd: int | None = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise SequenceError(
                f"sequence counter {self._path} is in use by another owner"
            ) from exc
        self._reserved = self._read()
        # Resume after everything that may have been handed out before a crash.
        self._next = self._reserved + 1

    def _read(self) -> int:
        try:
            raw = self._path.read_bytes()
        except FileNotFoundError:
            return 0
        try:
            value = json.loads(raw)["reserved"]
        except (ValueError, KeyError, TypeError) as exc:
            raise SequenceError(f"sequence counter {self._path}: corrupt") from exc
        if not isinstance(value, int) or value < 0:
            raise SequenceError(f"sequence counter {self._path}: corrupt")
        return value

    def next(self) -> int:
        """The next sequence number, durable before it is returned."""
        with self._mutex:
            if self._lock_fd is None:
                raise SequenceError("sequence counter is closed")
            value = self._next
            if value > self._reserved:
                reserved = value + self._block - 1
                atomic_write(self._path, json.dumps({"reserved": reserved}).encode())
                self._reserved = reserved
            self._next = value + 1
            return value

    @property
    def last_reserved(self) -> int:
        return self._reserved

    def close(self) -> None:
        with self._mutex:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> SequenceCounter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def advance_past(self, number: int) -> None:
        """Make every later number greater than `number` (the host's last accepted one, from
        its signed `stale_sequence` answer after a sequence.json restored from an older
        copy). Durable like :meth:`next`: the new reservation is on disk before it returns.
        Never moves the counter back."""
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            raise SequenceError(f"cannot advance the sequence past {number!r}")
        with self._mutex:
            if self._lock_fd is None:
                raise SequenceError("sequence counter is closed")
            if number < self._next:
                return
            reserved = number + self._block
            atomic_write(self._path, json.dumps({"reserved": reserved}).encode())
            self._reserved = reserved
            self._next = number + 1
