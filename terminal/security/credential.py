"""What the technician credential and the merchant PIN share: a secret kept as a peppered slow
hash beside its own lock-out book, and the one way an entry is checked against both.

The hash: scrypt (RFC 7914, through `cryptography`'s Scrypt; N=2^15, r=8, p=1 by default) over
the secret with a random salt, then an HMAC-SHA256 under a pepper derived from the terminal's
device-bound key (:func:`terminal.security.lockout.derive_key`, label ``pepper:<purpose>``), so
a copy of the SD card without the device secret cannot test a guess offline. The file is one
JSON document, ``{"format", "kdf", "hash", "set_at"}``, written atomically with mode 0600.

An entry (:meth:`PepperedSecret._attempt`) is checked under the book's exclusive lock: the
stored credential is read, a tampered book is audited, a caller that is locked out is refused
without its secret being looked at (terminal.security.lockout says why), otherwise the secret
is compared and the count kept. What the entry came to is an :class:`Attempt`; each credential
words it in its own errors and audit events.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any, ClassVar, Final

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

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

__all__ = ["DEFAULT_SCRYPT_N", "Attempt", "PepperedSecret", "b64", "scrypt"]

#: scrypt's cost for a new credential (stored with it, so it can be raised later).
DEFAULT_SCRYPT_N: Final = 2**15


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def scrypt(secret: str, kdf: dict[str, Any]) -> bytes:
    """The scrypt output for `secret` under the stored parameters `kdf`."""
    return Scrypt(
        salt=base64.b64decode(kdf["salt"]),
        length=32,
        n=int(kdf["n"]),
        r=int(kdf["r"]),
        p=int(kdf["p"]),
    ).derive(secret.encode("utf-8"))


@dataclass(frozen=True)
class Attempt:
    """What one entry came to."""

    right: bool
    #: Seconds until the caller's next entry is checked (0: at once).
    retry_after: int = 0
    #: False: the caller was locked out, so the secret was not looked at.
    checked: bool = True
    #: (Not checked) locked by a fail-closed record that replaced a tampered one, not by the
    #: caller's own wrong entries.
    at_floor: bool = False
    #: (Checked, wrong) the wrong entries in a row, this one included.
    failures: int = 0
    #: (Checked, wrong, not locked) wrong entries left before the next one locks.
    tries_left: int = 0


class PepperedSecret(ABC):
    """A credential at `path`, bound to `device_key` (peppered under the key for its
    `purpose`), its lock-out book beside it; `audit` receives what the credential itself
    audits. A subclass names its stored `format` and its `purpose`, and reads its file
    (:meth:`_load`)."""

    format: ClassVar[str]
    #: Names the credential in its pepper, its book's MAC and the audit log.
    purpose: ClassVar[str]

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
        self.policy = policy
        self.book = LockoutBook(
            self._lockout_path(), device_key, purpose=self.purpose, clock=clock, policy=policy
        )

    def _lockout_path(self) -> Path:
        """The book: beside the credential, named after it."""
        return self.path.with_name(self.path.stem + "-lockout.json")

    def exists(self) -> bool:
        return self.path.exists()

    def _pepper(self, scrypt_output: bytes) -> bytes:
        """The stored hash for an scrypt output: the key is asked for only now (it may be a
        function that opens the keystore)."""
        pepper = derive_key(resolve_key(self._device_key), "pepper:" + self.purpose)
        return hmac.new(pepper, scrypt_output, sha256).digest()

    def _write(self, doc: dict[str, Any]) -> None:
        atomic_write(self.path, json.dumps(doc, sort_keys=True, indent=2).encode() + b"\n")

    def _audit_tamper(self, session: LockoutSession, actor: str) -> None:
        if session.tampered:
            self._audit.record(
                "pin_lockout_tampered",
                actor=actor,
                credential=self.purpose,
                reason=session.tampered,
            )

    @abstractmethod
    def _load(self, session: LockoutSession, actor: str) -> dict[str, Any]:
        """The stored credential (with "kdf" and "hash"), read under the book's lock."""

    def _store(self, secret: str, *, keep_lockout: bool = False) -> bool:
        """Write the credential for `secret` (already checked against the PIN policy); every
        caller's count starts again unless `keep_lockout` and one is being replaced. Returns
        whether one was replaced."""
        kdf: dict[str, Any] = {"salt": b64(self._token(16)), "n": self._scrypt_n, "r": 8, "p": 1}
        sealed = self._pepper(scrypt(secret, kdf))
        with self.book.session(missing_ok=not self.exists()) as session:
            replacing = self.exists()
            # The book first: a crash between the two writes leaves a fresh count with the old
            # credential, never a new credential without a book (which reads as tampered). A
            # kept book found tampered with has just been replaced by the fail-closed one.
            if keep_lockout and replacing:
                self._audit_tamper(session, "system")
            else:
                session.reset()
            self._write(
                {
                    "format": self.format,
                    "kdf": kdf,
                    "hash": b64(sealed),
                    "set_at": int(self._clock()),
                }
            )
        return replacing

    def _attempt(self, secret: str, scope: str, *, actor: str) -> Attempt:
        """Check `secret` for the caller `scope` (see the module docstring); `actor` is who
        the tamper audit names."""
        with self.book.session() as session:
            doc = self._load(session, actor)
            self._audit_tamper(session, actor)
            wait = session.retry_after(scope)
            if wait:
                # A caller still at a fail-closed floor is locked because of the record, not
                # because of its own entries.
                at_floor = scope not in session.scopes() and session.floor != ScopeState()
                return Attempt(False, wait, checked=False, at_floor=at_floor)
            expected = base64.b64decode(doc["hash"])
            if hmac.compare_digest(self._pepper(scrypt(secret, doc["kdf"])), expected):
                session.succeed(scope)
                return Attempt(True)
            state = session.fail(scope)
        lockout = state.retry_after(session.now, self.policy)
        left = 0 if lockout else self.policy.free_failures - state.failures
        return Attempt(False, lockout, failures=state.failures, tries_left=left)
