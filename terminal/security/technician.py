"""The technician credential: a PIN or pass-phrase that guards service operations.

Set at provisioning; required to re-provision, to change parameters, to rotate the terminal
key and to export or import the offline queue. Stored as an scrypt hash (RFC 7914, through
`cryptography`'s Scrypt; N=2^15, r=8, p=1 by default) with a random salt in DATA_DIR/
technician.json (mode 0600), never in clear.

Wrong entries are rate limited across processes and restarts (the failure count and the
lock-out deadline live in the same file): the first `free_failures` wrong entries cost
nothing, then each one locks the credential for `base_lockout * 2^(k)` seconds (capped at
`max_lockout`). Every attempt, right or wrong, and every lock-out goes to the audit log.
"""

from __future__ import annotations

import base64
import fcntl
import hmac
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ..domain.errors import TerminalError
from ..store.audit import AuditLog
from ..store.keys import atomic_write

__all__ = [
    "MIN_LENGTH",
    "TechnicianAuthError",
    "TechnicianCredential",
    "TechnicianError",
    "TechnicianLockedError",
]

FORMAT: Final = "pipos-technician-1"
MIN_LENGTH: Final = 6
DEFAULT_SCRYPT_N: Final = 2**15


class TechnicianError(TerminalError):
    """The technician credential is missing, unreadable or cannot be set as asked."""


class TechnicianAuthError(TechnicianError):
    """The technician PIN or pass-phrase is wrong."""


class TechnicianLockedError(TechnicianError):
    """Too many wrong entries: locked for `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _derive(secret: str, kdf: dict[str, Any]) -> bytes:
    return Scrypt(
        salt=base64.b64decode(kdf["salt"]),
        length=32,
        n=int(kdf["n"]),
        r=int(kdf["r"]),
        p=int(kdf["p"]),
    ).derive(secret.encode("utf-8"))


class TechnicianCredential:
    """The credential file at `path`; `audit` receives every attempt."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        audit: AuditLog,
        *,
        clock: Callable[[], float] = time.time,
        token: Callable[[int], bytes] = os.urandom,
        scrypt_n: int = DEFAULT_SCRYPT_N,
        free_failures: int = 3,
        base_lockout: int = 30,
        max_lockout: int = 3600,
    ) -> None:
        self.path = Path(path)
        self._audit = audit
        self._clock = clock
        self._token = token
        self._scrypt_n = scrypt_n
        self._free = free_failures
        self._base = base_lockout
        self._max = max_lockout

    def exists(self) -> bool:
        return self.path.exists()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise attempts between processes (a lock file next to the credential)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.path.read_bytes())
        except FileNotFoundError as exc:
            raise TechnicianError(
                f"no technician credential at {self.path}; it is set by `pipos provision`"
            ) from exc
        except (OSError, ValueError) as exc:
            raise TechnicianError(f"technician credential {self.path}: unreadable") from exc
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise TechnicianError(f"technician credential {self.path}: unknown format")
        return doc

    def _write(self, doc: dict[str, Any]) -> None:
        atomic_write(self.path, json.dumps(doc, sort_keys=True, indent=2).encode() + b"\n")

    def set(self, secret: str, *, actor: str = "technician") -> None:
        """Set (or replace, after :meth:`verify`) the credential."""
        if len(secret) < MIN_LENGTH:
            raise TechnicianError(
                f"technician PIN or pass-phrase: too short (at least {MIN_LENGTH} characters)"
            )
        if secret.isdigit() and len(set(secret)) == 1:
            raise TechnicianError("technician PIN: all digits the same is too easy to guess")
        kdf: dict[str, Any] = {"salt": _b64(self._token(16)), "n": self._scrypt_n, "r": 8, "p": 1}
        with self._locked():
            replacing = self.exists()
            self._write(
                {
                    "format": FORMAT,
                    "kdf": kdf,
                    "hash": _b64(_derive(secret, kdf)),
                    "set_at": int(self._clock()),
                    "failures": 0,
                    "locked_until": 0,
                }
            )
        self._audit.record(
            "technician_credential_changed" if replacing else "technician_credential_set",
            actor=actor,
        )

    def verify(self, secret: str, *, action: str, actor: str = "technician") -> None:
        """Check the credential before `action`; raises TechnicianAuthError/LockedError."""
        with self._locked():
            doc = self._read()
            now = int(self._clock())
            locked_until = int(doc.get("locked_until", 0))
            if now < locked_until:
                wait = locked_until - now
                self._audit.record(
                    "technician_locked_out", actor=actor, action=action, retry_after=wait
                )
                raise TechnicianLockedError(
                    f"too many wrong technician PINs: locked for {wait} s more", wait
                )
            expected = base64.b64decode(doc["hash"])
            if hmac.compare_digest(_derive(secret, doc["kdf"]), expected):
                if doc.get("failures"):
                    doc["failures"] = 0
                    doc["locked_until"] = 0
                    self._write(doc)
                self._audit.record("technician_auth_ok", actor=actor, action=action)
                return
            failures = int(doc.get("failures", 0)) + 1
            doc["failures"] = failures
            lockout = 0
            if failures >= self._free:
                lockout = min(self._max, self._base * 2 ** (failures - self._free))
                doc["locked_until"] = now + lockout
            self._write(doc)
        self._audit.record(
            "technician_auth_failed",
            actor=actor,
            action=action,
            failures=failures,
            locked_for=lockout,
        )
        message = "wrong technician PIN or pass-phrase"
        if lockout:
            raise TechnicianLockedError(f"{message}; locked for {lockout} s", lockout)
        raise TechnicianAuthError(f"{message} ({self._free - failures} more before a lock-out)")
