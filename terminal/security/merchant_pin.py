"""The merchant PIN: what refunds and voids (and the other PIN-guarded operations of the local
API) ask for, at the register and on the kiosk page.

Set by the technician with `pipos merchant-pin set`, stored in DATA_DIR/merchant-pin.json
(mode 0600), never in clear: an scrypt hash (RFC 7914; N=2^15, r=8, p=1 by default) with a
random salt, then an HMAC-SHA256 under a pepper derived from the terminal's device-bound key
(`Keystore.data_key(KEY_PURPOSE)`). A 4-digit PIN has only 10,000 values, so a hash alone
would fall to a copy of the SD card in minutes; with the pepper the copy cannot test a guess
without the device secret. The clear-text file of earlier versions (DATA_DIR/merchant-pin)
is refused by the terminal at start and removed (overwritten, then deleted) by
:meth:`MerchantPin.set`.

A new PIN is 4 to 12 ASCII digits and not too easy to guess (terminal.security.pin_policy).
Wrong entries go through the one lock-out policy (terminal.security.lockout) in the PIN's own
book, DATA_DIR/merchant-pin-lockout.json, per scope: the API passes the name of the caller's
credential, so a hostile holder of the kiosk page's credential locks the page only, never the
register, and never the technician (whose credential has a book of its own). The API audits
the wrong and locked entries (it knows the caller and the transaction); this module audits
the PIN being set and a tampered lock-out record.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
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
from .pin_policy import merchant_pin_problem, refusal

__all__ = [
    "FILE",
    "KEY_PURPOSE",
    "LEGACY_FILE",
    "MerchantPin",
    "MerchantPinError",
    "MerchantPinLockedError",
    "MerchantPinStatus",
    "MerchantPinWrongError",
    "check_new_pin",
]

FORMAT: Final = "pipos-merchant-pin-1"
FILE: Final = "merchant-pin.json"
#: Where earlier versions kept the PIN in clear.
LEGACY_FILE: Final = "merchant-pin"
#: `Keystore.data_key(KEY_PURPOSE)` is the key this credential is bound to.
KEY_PURPOSE: Final = "security/merchant-pin"
DEFAULT_SCRYPT_N: Final = 2**15


class MerchantPinError(TerminalError):
    """The merchant PIN is not set, unreadable, or cannot be set as asked."""


class MerchantPinWrongError(MerchantPinError):
    """The PIN is wrong; `tries_left` more before a lock-out."""

    def __init__(self, message: str, tries_left: int) -> None:
        super().__init__(message)
        self.tries_left = tries_left


class MerchantPinLockedError(MerchantPinError):
    """Too many wrong entries from this caller: no entry is checked for `retry_after` s."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class MerchantPinStatus:
    set_at: int | None  # None: no merchant PIN is set
    now: int
    floor: ScopeState  # the state of every caller not listed in `scopes`
    scopes: dict[str, ScopeState]
    tampered: str | None  # noticed by this look: the lock-out record was missing or altered
    policy: LockoutPolicy = DEFAULT_POLICY

    def locked(self) -> dict[str, int]:
        """Callers locked out now, with the seconds left (an empty name: every other one)."""
        out = {k: v.retry_after(self.now, self.policy) for k, v in self.scopes.items()}
        out = {k: v for k, v in out.items() if v}
        floor = self.floor.retry_after(self.now, self.policy)
        if floor:
            out[""] = floor
        return out


def check_new_pin(pin: str) -> None:
    """Refuse a merchant PIN that is malformed or too easy to guess (English and Chinese)."""
    problem = merchant_pin_problem(pin)
    if problem is not None:
        raise MerchantPinError(refusal("merchant", *problem))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrub(path: Path) -> bool:
    """Overwrite `path` with zeros, then delete it (True if there was one). Flash wear
    levelling may keep an old copy of the block: the PIN is changed as well, never kept."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return False
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, b"\0" * size)
        os.fsync(fd)
    finally:
        os.close(fd)
    path.unlink()
    return True


class MerchantPin:
    """The merchant PIN credential at `path` (DATA_DIR/merchant-pin.json), bound to
    `device_key`; its lock-out record sits beside it."""

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
            self.path.with_name(self.path.stem + "-lockout.json"),
            device_key,
            purpose="merchant-pin",
            clock=clock,
            policy=policy,
        )

    def exists(self) -> bool:
        return self.path.exists()

    def _seal(self, pin: str, kdf: dict[str, Any]) -> bytes:
        scrypt = Scrypt(
            salt=base64.b64decode(kdf["salt"]),
            length=32,
            n=int(kdf["n"]),
            r=int(kdf["r"]),
            p=int(kdf["p"]),
        ).derive(pin.encode("utf-8"))
        pepper = derive_key(resolve_key(self._device_key), "pepper:merchant-pin")
        return hmac.new(pepper, scrypt, sha256).digest()

    def _audit_tamper(self, session: LockoutSession) -> None:
        if session.tampered:
            self._audit.record(
                "pin_lockout_tampered",
                actor="system",
                credential="merchant-pin",
                reason=session.tampered,
            )

    def read(self) -> dict[str, Any]:
        """The stored credential (no PIN in it), checked for shape."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError as exc:
            raise MerchantPinError(
                f"no merchant PIN is set ({self.path} is missing): the technician sets it with "
                "`pipos merchant-pin set`"
            ) from exc
        except OSError as exc:
            raise MerchantPinError(
                f"merchant PIN {self.path}: cannot read ({exc.strerror})"
            ) from exc
        if raw.strip().isdigit():
            raise MerchantPinError(
                f"{self.path} holds a merchant PIN in clear, which this version refuses; set it "
                "with `pipos merchant-pin set` (which removes the clear-text file)"
            )
        try:
            doc = json.loads(raw)
            kdf = doc["kdf"]
            if doc["format"] != FORMAT or not (
                isinstance(kdf, dict) and {"salt", "n", "r", "p"} <= set(kdf)
            ):
                raise ValueError("unknown format")
            base64.b64decode(doc["hash"], validate=True)
        except (ValueError, KeyError, TypeError) as exc:
            raise MerchantPinError(
                f"merchant PIN {self.path}: not a merchant PIN credential (`pipos merchant-pin "
                "set` writes one)"
            ) from exc
        return dict(doc)

    def set(self, pin: str, *, actor: str = "technician", keep_lockout: bool = False) -> bool:
        """Set (or replace) the PIN; callers' lock-outs start again unless `keep_lockout` (the
        demo terminal, which sets its PIN at every start, keeps them). Returns whether a
        clear-text PIN file of an earlier version was found beside it and removed."""
        check_new_pin(pin)
        kdf: dict[str, Any] = {"salt": _b64(self._token(16)), "n": self._scrypt_n, "r": 8, "p": 1}
        sealed = self._seal(pin, kdf)
        with self.book.session(missing_ok=not self.exists()) as session:
            replacing = self.exists()
            # The book first: a crash between the two writes leaves a fresh count with the old
            # PIN, never a new PIN without a book (which reads as tampered). A kept book found
            # tampered with has just been replaced by the fail-closed one: audited here.
            if not (keep_lockout and replacing):
                session.reset()
            else:
                self._audit_tamper(session)
            doc = {"format": FORMAT, "kdf": kdf, "hash": _b64(sealed), "set_at": int(self._clock())}
            atomic_write(self.path, json.dumps(doc, sort_keys=True, indent=2).encode() + b"\n")
        removed = _scrub(self.path.with_name(LEGACY_FILE))
        self._audit.record(
            "merchant_pin_changed" if replacing else "merchant_pin_set",
            actor=actor,
            lockouts_cleared=not (keep_lockout and replacing),
            clear_text_file_removed=removed,
        )
        return removed

    def verify(self, pin: str, *, scope: str) -> None:
        """Check `pin` for the caller `scope`; raises MerchantPinWrongError or
        MerchantPinLockedError (and MerchantPinError when no PIN is set)."""
        with self.book.session() as session:
            doc = self.read()
            self._audit_tamper(session)
            wait = session.retry_after(scope)
            if wait:
                # A caller still at a fail-closed floor is locked because of the record, not
                # because of its own entries.
                at_floor = scope not in session.scopes() and session.floor != ScopeState()
                why = (
                    "the PIN lock-out record was altered or removed"
                    if at_floor
                    else "too many wrong PINs"
                )
                raise MerchantPinLockedError(
                    f"{why}: refunds and voids are locked for {wait} s", wait
                )
            if hmac.compare_digest(self._seal(pin, doc["kdf"]), base64.b64decode(doc["hash"])):
                session.succeed(scope)
                return
            state = session.fail(scope)
        lockout = state.retry_after(session.now, self.policy)
        if lockout:
            raise MerchantPinLockedError(f"wrong PIN; locked for {lockout} s", lockout)
        left = self.policy.free_failures - state.failures
        raise MerchantPinWrongError(f"wrong PIN ({left} tries left before lockout)", left)

    def status(self) -> MerchantPinStatus:
        """Whether a PIN is set, and each caller's lock-out (no PIN is checked)."""
        now = int(self._clock())
        if not self.exists():
            return MerchantPinStatus(None, now, ScopeState(), {}, None, self.policy)
        with self.book.session() as session:
            doc = self.read()
            self._audit_tamper(session)
            return MerchantPinStatus(
                int(doc.get("set_at", 0)),
                session.now,
                session.floor,
                session.scopes(),
                session.tampered,
                self.policy,
            )
