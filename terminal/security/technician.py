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

A credential of the previous format (``pipos-technician-1``: scrypt only, no pepper, its
failure count in the same plain file) is upgraded at its first use: its hash is peppered in
place (HMAC over the stored scrypt output, so no PIN is needed), its count moves into the
authenticated book. Such a file is a hash anyone can compute for a secret of their own, so it
is accepted only where it can be genuine, on a terminal not yet upgraded past it. The keystore
beside it decides, the one file on the card that cannot be lowered without the device secret:
the previous version wrote keystore format ``pipos-keystore-1`` with technician format 1, and a
format-2 keystore relabelled as format 1 no longer opens (terminal.store.keys).

* Keystore still format 1: the credential is upgraded (at its first use, or by
  :func:`upgrade_keystore`, which every place that upgrades a keystore calls: it upgrades
  the credential, then the keystore, so the keystore's format 2 marks both as done).
* Keystore format 2 (every terminal this version provisioned, every older one once upgraded)
  or no readable keystore: a format-1 file was written over the credential. It is refused
  with TechnicianCredentialReplacedError ("re-provision the terminal"), audited as
  ``technician_credential_downgrade_refused``, before any count is looked at, so deleting the
  lock-out file along with it changes nothing; the files are left as found.

Not covered: the time between the two upgrades (a crash between them; a credential upgraded
at its first use, by a service operation, before the keystore is upgraded at the next start
or provisioning), when the keystore still reads format 1 beside an upgraded credential; a
keystore rolled back to an older authentic format-1 copy of itself (the rollback
terminal.security.lockout does not cover either). A deleted technician.json refuses every
service operation ("no technician credential"), but `pipos provision` then sets a new one as
it does for a new terminal (terminal.service.provision decides that, not this module).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

from ..domain.errors import TerminalError
from ..store.audit import AuditLog
from ..store.keys import LEGACY_FORMAT as KEYSTORE_LEGACY_FORMAT
from ..store.keys import Keystore
from .credential import PepperedSecret, b64
from .lockout import LockoutSession, ScopeState
from .pin_policy import TECHNICIAN_MIN_LENGTH, refusal, technician_secret_problem

__all__ = [
    "KEY_PURPOSE",
    "LOCKOUT_FILE",
    "MIN_LENGTH",
    "TechnicianAuthError",
    "TechnicianCredential",
    "TechnicianCredentialReplacedError",
    "TechnicianError",
    "TechnicianLockedError",
    "check_new_secret",
    "upgrade_keystore",
]

FORMAT: Final = "pipos-technician-2"
LEGACY_FORMAT: Final = "pipos-technician-1"
MIN_LENGTH: Final = TECHNICIAN_MIN_LENGTH
#: `Keystore.data_key(KEY_PURPOSE)` is the key this credential is bound to.
KEY_PURPOSE: Final = "security/technician"
LOCKOUT_FILE: Final = "technician-lockout.json"
SCOPE: Final = "technician"
_T = TypeVar("_T")


class TechnicianError(TerminalError):
    """The technician credential is missing, unreadable or cannot be set as asked."""


class TechnicianAuthError(TechnicianError):
    """The technician PIN or pass-phrase is wrong."""


class TechnicianCredentialReplacedError(TechnicianError):
    """A credential of the previous format where this terminal has been upgraded past it."""


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


class TechnicianCredential(PepperedSecret):
    """The credential file at `path`, bound to `device_key`; `audit` receives every attempt."""

    format = FORMAT
    purpose = "technician"

    def _lockout_path(self) -> Path:
        return self.path.with_name(LOCKOUT_FILE)

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

    def _load(self, session: LockoutSession, actor: str) -> dict[str, Any]:
        doc = self._read()
        if doc["format"] == LEGACY_FORMAT:
            self._check_legacy_allowed()
            doc = self._upgrade(doc, session)
        return doc

    def _refuse_replaced(self, step: Callable[[], _T], *, actor: str, action: str) -> _T:
        """`step`, with a credential replaced by an older format audited before it is refused."""
        try:
            return step()
        except TechnicianCredentialReplacedError as exc:
            self._audit.record(
                "technician_credential_downgrade_refused",
                actor=actor,
                action=action,
                reason=str(exc),
            )
            raise

    def _check_legacy_allowed(self) -> None:
        """A credential of the previous format is genuine only beside a keystore of the
        previous format (see the module docstring); otherwise it was written over a newer
        one."""
        keystore = Keystore.path_in(self.path.parent)
        if _keystore_format(keystore) == KEYSTORE_LEGACY_FORMAT:
            return
        raise TechnicianCredentialReplacedError(
            f"the technician credential {self.path} was replaced by an older format "
            f"({LEGACY_FORMAT}), which this terminal's keystore ({keystore}: upgraded, or "
            "missing) rules out: it is refused as tampering; re-provision the terminal "
            f"(remove {self.path.name}, then `pipos provision` sets a new technician PIN)"
        )

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
            "hash": b64(self._pepper(base64.b64decode(doc["hash"]))),
            "set_at": int(doc.get("set_at", 0)),
        }
        self._write(new)
        self._audit.record("technician_credential_upgraded", actor="system")
        return new

    def upgrade(self) -> bool:
        """Upgrade a credential of the previous format in place, as its first use would (no
        PIN is needed); True if there was one. Refused (TechnicianCredentialReplacedError,
        audited) where the keystore beside it has been upgraded already."""
        with self.book.session(missing_ok=True) as session:
            doc = self._read()
            upgrading = bool(doc["format"] == LEGACY_FORMAT)
            if upgrading:
                self._refuse_replaced(self._check_legacy_allowed, actor="system", action="upgrade")
                self._upgrade(doc, session)
            self._audit_tamper(session, "system")
            return upgrading

    def set(self, secret: str, *, actor: str = "technician") -> None:
        """Set (or replace, after :meth:`verify`) the credential; its lock-out starts again."""
        check_new_secret(secret)
        replacing = self._store(secret)
        self._audit.record(
            "technician_credential_changed" if replacing else "technician_credential_set",
            actor=actor,
        )

    def verify(self, secret: str, *, action: str, actor: str = "technician") -> None:
        """Check the credential before `action`; raises TechnicianAuthError/LockedError (and
        TechnicianCredentialReplacedError for an older format written over this one)."""
        attempt = self._refuse_replaced(
            lambda: self._attempt(secret, SCOPE, actor=actor), actor=actor, action=action
        )
        if attempt.right:
            self._audit.record("technician_auth_ok", actor=actor, action=action)
            return
        if not attempt.checked:
            wait = attempt.retry_after
            self._audit.record(
                "technician_locked_out", actor=actor, action=action, retry_after=wait
            )
            raise TechnicianLockedError(
                f"too many wrong technician PINs: locked for {wait} s more", wait
            )
        self._audit.record(
            "technician_auth_failed",
            actor=actor,
            action=action,
            failures=attempt.failures,
            locked_for=attempt.retry_after,
        )
        message = "wrong technician PIN or pass-phrase"
        if attempt.retry_after:
            raise TechnicianLockedError(
                f"{message}; locked for {attempt.retry_after} s", attempt.retry_after
            )
        raise TechnicianAuthError(f"{message} ({attempt.tries_left} more before a lock-out)")


def upgrade_keystore(keystore: Keystore, credential_path: Path, audit: AuditLog) -> bool:
    """Bring the keystore to its current format (`Keystore.upgrade`; True if it was not), the
    technician credential at `credential_path` first if it is of the previous format: what
    every place that upgrades a keystore calls, since once the keystore is format 2 a
    format-1 credential is refused (see the module docstring)."""
    if keystore.needs_upgrade and credential_path.exists():
        credential = TechnicianCredential(
            credential_path, audit, device_key=keystore.data_key(KEY_PURPOSE)
        )
        try:
            credential.upgrade()
        except TechnicianCredentialReplacedError:
            raise
        except TechnicianError:
            # Unreadable or of no known format: nothing to carry over, and no reason to keep
            # the keystore's identity block unauthenticated; its next use says what is wrong.
            pass
    return keystore.upgrade()


def _keystore_format(path: Path) -> str | None:
    """The format a keystore file says it is in (None: no readable keystore there). Read
    from its clear part, without the device secret: a keystore relabelled to an older
    format no longer opens (terminal.store.keys), so the label cannot be lowered to let an
    older credential in while the terminal still works."""
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    fmt = doc.get("format") if isinstance(doc, dict) else None
    return fmt if isinstance(fmt, str) else None
