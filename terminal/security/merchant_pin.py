"""The merchant PIN: what refunds and voids (and the other PIN-guarded operations of the local
API) ask for, at the register and on the kiosk page.

Set by the technician with `pipos merchant-pin set`, stored in DATA_DIR/merchant-pin.json
(mode 0600), never in clear: an scrypt hash (RFC 7914; N=2^15, r=8, p=1 by default) with a
random salt, then an HMAC-SHA256 under a pepper derived from the terminal's device-bound key
(`Keystore.data_key(KEY_PURPOSE)`), kept as terminal.security.credential keeps both PINs. A
4-digit PIN has only 10,000 values, so a hash alone would fall to a copy of the SD card in
minutes; with the pepper the copy cannot test a guess without the device secret. The
clear-text file of earlier versions (DATA_DIR/merchant-pin) is refused by the terminal at
start and removed (overwritten, then deleted) by :meth:`MerchantPin.set`; a clear-text PIN in
DATA_DIR/merchant-pin.json is refused too, and there is no other older format to fall back to.

A new PIN is 4 to 12 ASCII digits and not too easy to guess (terminal.security.pin_policy).
Wrong entries go through the one lock-out policy (terminal.security.lockout) in the PIN's own
book, DATA_DIR/merchant-pin-lockout.json, per scope: the API passes the name of the caller's
credential, so a hostile holder of the kiosk page's credential locks the page only, never the
register, and never the technician (whose credential has a book of its own). The API audits
the wrong and locked entries (it knows the caller and the transaction); this module audits
the PIN being set and a tampered lock-out record.

The errors' messages are English and name no operation (the PIN guards refunds, voids and the
end of day alike); what they say is also on the errors themselves, for the API to word in the
terminal's language: MerchantPinWrongError.tries_left, MerchantPinLockedError.retry_after and
MerchantPinLockedError.reason.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from ..domain.errors import TerminalError
from .credential import DEFAULT_SCRYPT_N, PepperedSecret
from .lockout import DEFAULT_POLICY, LockoutPolicy, LockoutSession, ScopeState
from .pin_policy import merchant_pin_problem, refusal

__all__ = [
    "DEFAULT_SCRYPT_N",
    "FILE",
    "KEY_PURPOSE",
    "LEGACY_FILE",
    "LockReason",
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


class MerchantPinError(TerminalError):
    """The merchant PIN is not set, unreadable, or cannot be set as asked."""


class MerchantPinWrongError(MerchantPinError):
    """The PIN is wrong; `tries_left` (an int, at least 1) more wrong ones before the caller
    is locked out."""

    def __init__(self, message: str, tries_left: int) -> None:
        super().__init__(message)
        self.tries_left = tries_left


#: Why a caller is locked out: "wrong", this entry was wrong and locked it (the PIN was
#: checked); "locked", its earlier wrong entries did (this one was not checked); "tampered",
#: the lock-out record was altered or removed, which locks every caller (not checked).
LockReason = Literal["wrong", "locked", "tampered"]


class MerchantPinLockedError(MerchantPinError):
    """This caller is locked out: no entry of its is checked for `retry_after` (an int, in
    seconds, at least 1); `reason` (:data:`LockReason`) says why."""

    def __init__(self, message: str, retry_after: int, *, reason: LockReason = "locked") -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.reason: LockReason = reason


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


class MerchantPin(PepperedSecret):
    """The merchant PIN credential at `path` (DATA_DIR/merchant-pin.json), bound to
    `device_key`; its lock-out record sits beside it."""

    format = FORMAT
    purpose = "merchant-pin"

    def _load(self, session: LockoutSession, actor: str) -> dict[str, Any]:
        return self.read()

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
        replacing = self._store(pin, keep_lockout=keep_lockout)
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
        MerchantPinLockedError (and MerchantPinError when no PIN is set). The messages name
        no operation (the PIN guards refunds, voids and the end of day alike); the numbers in
        them are attributes of the errors, for a caller that words them in another language."""
        attempt = self._attempt(pin, scope, actor="system")
        if attempt.right:
            return
        if not attempt.checked:
            reason: LockReason = "tampered" if attempt.at_floor else "locked"
            why = (
                "the PIN lock-out record was altered or removed"
                if attempt.at_floor
                else "too many wrong PINs"
            )
            raise MerchantPinLockedError(
                f"{why}: the merchant PIN is locked for {attempt.retry_after} s",
                attempt.retry_after,
                reason=reason,
            )
        if attempt.retry_after:
            raise MerchantPinLockedError(
                f"wrong PIN: the merchant PIN is locked for {attempt.retry_after} s",
                attempt.retry_after,
                reason="wrong",
            )
        raise MerchantPinWrongError(
            f"wrong PIN ({attempt.tries_left} tries left before the merchant PIN is locked)",
            attempt.tries_left,
        )

    def status(self) -> MerchantPinStatus:
        """Whether a PIN is set, and each caller's lock-out (no PIN is checked)."""
        now = int(self._clock())
        if not self.exists():
            return MerchantPinStatus(None, now, ScopeState(), {}, None, self.policy)
        with self.book.session() as session:
            doc = self.read()
            self._audit_tamper(session, "system")
            return MerchantPinStatus(
                int(doc.get("set_at", 0)),
                session.now,
                session.floor,
                session.scopes(),
                session.tampered,
                self.policy,
            )
