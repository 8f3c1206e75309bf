"""Encrypted queue backups for a technician: export on a failing unit, import on its replacement.

File layout (all of it authenticated):

    PIPOS-QUEUE-BACKUP 1\n
    {"format": ..., "kdf": {scrypt params and salt}, "nonce": ..., "count": ...}\n
    AES-256-GCM ciphertext of {"items": [...], "signers": {...}} (associated data: the two
    lines above)

`signers` are the exporting terminal's public keys (key id -> raw Ed25519 key, base64, and
when it was retired), so the unit that imports can check each payment's terminal signature
before it takes it (:func:`import_queue`'s `check`; the terminal does it in
terminal/service/transfer.py). Older backups have none.

The key comes from the technician's passphrase through scrypt (RFC 7914), so the file carries
the payments re-encrypted for transport, independent of either terminal's keystore. Card data
is decrypted from the old unit's data key only in memory and re-sealed under the new unit's
key on import.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from .cardcrypt import Token
from .errors import BackupError, QueueError
from .store import ImportReport, OfflineQueue

__all__ = [
    "MAGIC",
    "BackupContents",
    "BackupSigner",
    "export_queue",
    "import_queue",
    "open_backup",
    "read_backup",
]

MAGIC: Final = b"PIPOS-QUEUE-BACKUP 1\n"
FORMAT: Final = "pipos-queue-backup-1"
DEFAULT_SCRYPT_N: Final = 2**15  # 32 MiB, ~0.1 s on a Pi-class CPU
_MAX_SCRYPT_N: Final = 2**20
_MIN_PASSPHRASE: Final = 8


@dataclass(frozen=True, slots=True)
class BackupSigner:
    """One public key of the exporting terminal: raw Ed25519 key, and its retirement time
    (unix seconds) if it was rotated out."""

    public_key: bytes = field(repr=False)
    retired: int | None = None


@dataclass(frozen=True, slots=True)
class BackupContents:
    items: list[dict[str, Any]]
    signers: Mapping[str, BackupSigner]


#: Called with a backup's items and signers before anything is imported; raises to refuse
#: the whole file.
ImportCheck = Callable[[Sequence[Mapping[str, Any]], Mapping[str, BackupSigner]], None]


def _kdf(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase)


def _check_passphrase(passphrase: bytes) -> None:
    if len(passphrase) < _MIN_PASSPHRASE:
        raise BackupError(f"passphrase: too short (need at least {_MIN_PASSPHRASE} characters)")


def export_queue(
    queue: OfflineQueue,
    path: str | os.PathLike[str],
    passphrase: bytes,
    *,
    token: Token = os.urandom,
    clock: Callable[[], float] = time.time,
    scrypt_n: int = DEFAULT_SCRYPT_N,
    signers: Mapping[str, BackupSigner] | None = None,
) -> int:
    """Write every payment of `queue` to an encrypted backup file; returns how many.

    `signers`: the exporting terminal's public keys, for the importer to check the
    payments' signatures with.

    Refuses to overwrite an existing file. The file is written to a temporary name, fsynced
    and renamed, so an interrupted export never leaves a half file under the final name.
    """
    _check_passphrase(passphrase)
    target = Path(path)
    if target.exists():
        raise BackupError(f"backup {target}: already exists; choose another file name")
    items = queue.export_documents()
    salt, nonce = token(16), token(12)
    header = {
        "format": FORMAT,
        "kdf": {"name": "scrypt", "salt": _b64(salt), "n": scrypt_n, "r": 8, "p": 1},
        "nonce": _b64(nonce),
        "created_at": int(clock()),
        "count": len(items),
    }
    head = MAGIC + json.dumps(header, sort_keys=True).encode("ascii") + b"\n"
    key = _kdf(passphrase, salt, scrypt_n, 8, 1)
    content: dict[str, Any] = {"items": items}
    if signers:
        content["signers"] = {
            key_id: {"public_key": _b64(signer.public_key), "retired": signer.retired}
            for key_id, signer in signers.items()
        }
    body = json.dumps(content, sort_keys=True, separators=(",", ":")).encode("utf-8")
    data = head + AESGCM(key).encrypt(nonce, body, head)
    tmp = target.with_name(target.name + ".part")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except OSError as exc:
        raise BackupError(f"backup {target}: cannot write ({exc.strerror})") from exc
    return len(items)


def read_backup(path: str | os.PathLike[str], passphrase: bytes) -> list[dict[str, Any]]:
    """Open and authenticate a backup file; its items (decrypted payment documents)."""
    return open_backup(path, passphrase).items


def open_backup(path: str | os.PathLike[str], passphrase: bytes) -> BackupContents:
    """Open and authenticate a backup file: its items and the exporter's public keys."""
    source = Path(path)
    try:
        data = source.read_bytes()
    except FileNotFoundError:
        raise BackupError(f"backup {source}: no such file") from None
    except OSError as exc:
        raise BackupError(f"backup {source}: cannot read ({exc.strerror})") from exc
    if not data.startswith(MAGIC):
        if data.startswith(b"PIPOS-QUEUE-BACKUP "):
            raise BackupError(f"backup {source}: made by a newer pipos (unsupported version)")
        raise BackupError(f"backup {source}: not a pipos queue backup")
    end = data.find(b"\n", len(MAGIC))
    if end < 0:
        raise BackupError(f"backup {source}: truncated (no header)")
    head = data[: end + 1]
    try:
        header = json.loads(data[len(MAGIC) : end])
        kdf = header["kdf"]
        if header.get("format") != FORMAT or kdf.get("name") != "scrypt":
            raise BackupError(f"backup {source}: unsupported format {header.get('format')!r}")
        n, r, p = int(kdf["n"]), int(kdf["r"]), int(kdf["p"])
        salt, nonce = _unb64(kdf["salt"]), _unb64(header["nonce"])
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise BackupError(f"backup {source}: header is damaged ({exc})") from None
    if not (2 <= n <= _MAX_SCRYPT_N and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16):
        raise BackupError(f"backup {source}: implausible key derivation parameters")
    if len(nonce) != 12:
        raise BackupError(f"backup {source}: header is damaged (nonce length)")
    key = _kdf(passphrase, salt, n, r, p)
    try:
        body = AESGCM(key).decrypt(nonce, data[end + 1 :], head)
    except InvalidTag:
        raise BackupError(
            f"backup {source}: wrong passphrase, or the file is damaged or was altered"
        ) from None
    try:
        content = json.loads(body)
        items = content["items"]
        signers = {
            str(key_id): BackupSigner(
                _unb64(str(entry["public_key"])),
                None if entry.get("retired") is None else int(entry["retired"]),
            )
            for key_id, entry in (content.get("signers") or {}).items()
        }
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise BackupError(f"backup {source}: content is malformed ({exc})") from None
    if not isinstance(items, list) or len(items) != header.get("count"):
        raise BackupError(f"backup {source}: item count does not match the header")
    return BackupContents(items, signers)


def import_queue(
    queue: OfflineQueue,
    path: str | os.PathLike[str],
    passphrase: bytes,
    *,
    check: ImportCheck | None = None,
) -> ImportReport:
    """Import a backup into `queue`. Idempotent: importing the same file twice adds nothing.

    `check` sees every item (and the exporter's keys) first and refuses the whole file by
    raising: nothing is imported from a file with one bad item."""
    contents = open_backup(path, passphrase)
    items = contents.items
    if check is not None:
        check(items, contents.signers)
    try:
        return queue.import_documents(items)
    except QueueError as exc:
        if isinstance(exc, BackupError):
            raise
        raise BackupError(f"backup {Path(path)}: {exc}") from exc


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)
