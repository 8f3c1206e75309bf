"""The technician credential: a PIN or pass-phrase that guards service operations.

Set at provisioning; required to re-provision, to change parameters, to rotate the terminal
key, to set the merchant PIN and to export or import the offline queue. Stored in DATA_DIR/
technician.json (mode 0600), never in clear: an scrypt hash (RFC 7914, through
`cryptography`'s Scrypt; N=2^15, r=8, p=1 by default) with a random salt, then an HMAC-SHA256
under a pepper derived from the terminal's device-bound key (`Keystore.data_key(KEY_PURPOSE)`),
so a copy of the SD card without the device secret cannot even test a guess offline.

A new secret is refused when it is too easy to guess (terminal.security.pin_policy: at least
6 characters; no sequence, repeat or common PIN, no common password). Wrong entries go
through the one lock-out policy (terminal.security.lockout) in the credential's own book,
DATA_DIR/technician-lockout.json, authenticated under the same device-bound key: across
processes and restarts, and never shared with the merchant PIN's callers. Every attempt,
right or wrong, every lock-out and a tampered lock-out record go to the audit log.

The key is asked for only when the credential is used (`device_key` may be a function), since
`pipos provision` checks the PIN of a terminal being provisioned again before it opens the
keystore, and sets the PIN of a new one after creating it.

A credential of the previous format (``pipos-technician-1``: scrypt only, its failure count in
the same plain file) is upgraded at its first use: its hash is peppered in place (HMAC over
the stored scrypt output, so no PIN is needed), its count moves into the authenticated book.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import time
from collections.abc import Callable
from hashlib import sha256
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ..domain.errors import TerminalError
from ..store.audit import AuditLog
from ..store.keys import atomic_write
from .lockout import (
    DEFAULT_POLICY,
    KeySource,
    LockoutBook,
    LockoutPolicy,
    LockoutSession,
    ScopeState,
    derive_key,
    resolve_key,
)
from .pin_policy import TECHNICIAN_MIN_LENGTH, refusal, technician_secret_problem

__all__ = [
    "KEY_PURPOSE",
    "LOCKOUT_FILE",
    "MIN_LENGTH",
    "TechnicianAuthError",
    "TechnicianCredential",
    "TechnicianError",
    "TechnicianLockedError",
    "check_new_secret",
]

FORMAT: Final = "pipos-technician-2"
LEGACY_FORMAT: Final = "pipos-technician-1"
MIN_LENGTH: Final = TECHNICIAN_MIN_LENGTH
DEFAULT_SCRYPT_N: Final = 2**15
#: `Keystore.data_key(KEY_PURPOSE)` is the key this credential is bound to.
KEY_PURPOSE: Final = "security/technician"
LOCKOUT_FILE: Final = "technician-lockout.json"
SCOPE: Final = "technician"


class TechnicianError(TerminalError):
    """The technician credential is missing, unreadable or cannot be set as asked."""


class TechnicianAuthError(TechnicianError):
    """The technician PIN or pass-phrase is wrong."""


class TechnicianLockedError(TechnicianError):
    """Too many wrong entries: locked for `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def check_new_secret(secret: str) -> None:
    """Refuse a technician secret that is too easy to guess (English and Chinese)."""
    problem = technician_secret_problem(secret)
    if problem is not None:
        raise TechnicianError(refusal("technician", *problem))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(secret: str, kdf: dict[str, Any]) -> bytes:
    return Scrypt(
        salt=base64.b64decode(kdf["salt"]),
        length=32,
        n=int(kdf["n"]),
        r=int(kdf["r"]),
        p=int(kdf["p"]),
    ).derive(secret.encode("utf-8"))


class TechnicianCredential:
    """The credential file at `path`, bound to `device_key`; `audit` receives every attempt."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        audit: AuditLog,
        *,
        device_key: KeySource,
        clock: Callable[[], float] = time.time,
        token: Callable[[int], bytes] = os.urandom,
        scrypt_n: int = DEFAULT_SCRYPT_N,
        policy: LockoutPolicy = DEFAULT_POLICY,
    ) -> None:
        self.path = Path(path)
        self._audit = audit
        self._device_key = device_key
        self._clock = clock
        self._token = token
        self._scrypt_n = scrypt_n
        self.book = LockoutBook(
            self.path.with_name(LOCKOUT_FILE),
            device_key,
            purpose="technician",
            clock=clock,
            policy=policy,
        )

    def exists(self) -> bool:
        return self.path.exists()

    def _pepper(self) -> bytes:
        return derive_key(resolve_key(self._device_key), "pepper:technician")

    def _seal(self, scrypt_output: bytes) -> str:
        return _b64(hmac.new(self._pepper(), scrypt_output, sha256).digest())

    def _read(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.path.read_bytes())
        except FileNotFoundError as exc:
            raise TechnicianError(
                f"no technician credential at {self.path}; it is set by `pipos provision`"
            ) from exc
        except (OSError, ValueError) as exc:
            raise TechnicianError(f"technician credential {self.path}: unreadable") from exc
        if not isinstance(doc, dict) or doc.get("format") not in (FORMAT, LEGACY_FORMAT):
            raise TechnicianError(f"technician credential {self.path}: unknown format")
        return doc

    def _write(self, doc: dict[str, Any]) -> None:
        atomic_write(self.path, json.dumps(doc, sort_keys=True, indent=2).encode() + b"\n")

    def _upgrade(self, doc: dict[str, Any], session: LockoutSession) -> dict[str, Any]:
        """A credential of the previous format, moved to this one (see the module docstring)."""
        if session.missing:
            # Expected: the old format kept its count in the credential itself.
            until = int(doc.get("locked_until", 0))
            session.reset()
            session.set_state(SCOPE, ScopeState(int(doc.get("failures", 0)), until))
            session.tampered = None
            session.missing = False
        new = {
            "format": FORMAT,
            "kdf": doc["kdf"],
            "hash": self._seal(base64.b64decode(doc["hash"])),
            "set_at": int(doc.get("set_at", 0)),
        }
        self._write(new)
        self._audit.record("technician_credential_upgraded", actor="system")
        return new

    def set(self, secret: str, *, actor: str = "technician") -> None:
        """Set (or replace, after :meth:`verify`) the credential; its lock-out starts again."""
        check_new_secret(secret)
        kdf: dict[str, Any] = {"salt": _b64(self._token(16)), "n": self._scrypt_n, "r": 8, "p": 1}
        sealed = self._seal(_scrypt(secret, kdf))
        with self.book.session(missing_ok=not self.exists()) as session:
            replacing = self.exists()
            # The book first: a crash between the two writes leaves a fresh count and the old
            # credential, never a new credential with a missing book (which reads as tampered).
            session.reset()
            self._write(
                {"format": FORMAT, "kdf": kdf, "hash": sealed, "set_at": int(self._clock())}
            )
        self._audit.record(
            "technician_credential_changed" if replacing else "technician_credential_set",
            actor=actor,
        )

    def verify(self, secret: str, *, action: str, actor: str = "technician") -> None:
        """Check the credential before `action`; raises TechnicianAuthError/LockedError."""
        with self.book.session() as session:
            doc = self._read()
            if doc["format"] == LEGACY_FORMAT:
                doc = self._upgrade(doc, session)
            if session.tampered:
                self._audit.record(
                    "pin_lockout_tampered",
                    actor=actor,
                    credential="technician",
                    reason=session.tampered,
                )
            wait = session.retry_after(SCOPE)
            if wait:
                self._audit.record(
                    "technician_locked_out", actor=actor, action=action, retry_after=wait
                )
                raise TechnicianLockedError(
                    f"too many wrong technician PINs: locked for {wait} s more", wait
                )
            expected = base64.b64decode(doc["hash"])
            if hmac.compare_digest(
                base64.b64decode(self._seal(_scrypt(secret, doc["kdf"]))), expected
            ):
                session.succeed(SCOPE)
                self._audit.record("technician_auth_ok", actor=actor, action=action)
                return
            state = session.fail(SCOPE)
        lockout = state.retry_after(session.now, session.policy)
        self._audit.record(
            "technician_auth_failed",
            actor=actor,
            action=action,
            failures=state.failures,
            locked_for=lockout,
        )
        message = "wrong technician PIN or pass-phrase"
        if lockout:
            raise TechnicianLockedError(f"{message}; locked for {lockout} s", lockout)
        left = session.policy.free_failures - state.failures
        raise TechnicianAuthError(f"{message} ({left} more before a lock-out)")
